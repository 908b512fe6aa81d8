// A bar chart of jobs finished per minute (completed and failed, stacked) as plain SVG:
// no library, no inline style, readable without colour (a table follows the chart).

import { h } from './dom.js';
import { formatTime } from './format.js';

const WIDTH = 720;
const HEIGHT = 220;
const PAD = { top: 12, right: 12, bottom: 28, left: 36 };

/** `minutes`: [{ time: Date, completed, failed }], oldest first. */
export function finishedChart(minutes) {
  const plotW = WIDTH - PAD.left - PAD.right;
  const plotH = HEIGHT - PAD.top - PAD.bottom;
  const max = Math.max(1, ...minutes.map((m) => m.completed + m.failed));
  const ticks = niceTicks(max);
  const top = ticks[ticks.length - 1];
  const slot = plotW / Math.max(minutes.length, 1);
  const barW = Math.max(slot - 2, 1);
  const y = (value) => PAD.top + plotH - (value / top) * plotH;
  const total = minutes.reduce((sum, m) => sum + m.completed + m.failed, 0);
  const failed = minutes.reduce((sum, m) => sum + m.failed, 0);
  const svg = h(
    'svg:svg',
    {
      viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
      class: 'chart',
      role: 'img',
      'aria-label': `Jobs finished per minute over the last ${minutes.length} minutes: ${total} in all, ${failed} failed.`,
      dataset: { testid: 'finished-chart' },
    },
  );
  for (const tick of ticks) {
    svg.append(
      h('svg:line', { x1: PAD.left, x2: WIDTH - PAD.right, y1: y(tick), y2: y(tick), class: 'grid' }),
      h('svg:text', { x: PAD.left - 6, y: y(tick) + 4, class: 'axis', 'text-anchor': 'end' }, String(tick)),
    );
  }
  minutes.forEach((minute, index) => {
    const x = PAD.left + index * slot + 1;
    const label = `${formatTime(minute.time)}: ${minute.completed} completed, ${minute.failed} failed`;
    const group = h('svg:g', { class: 'bar' }, h('svg:title', {}, label));
    if (minute.completed) {
      group.append(h('svg:rect', { x, width: barW, y: y(minute.completed), height: y(0) - y(minute.completed), class: 'completed' }));
    }
    if (minute.failed) {
      const base = minute.completed;
      group.append(h('svg:rect', { x, width: barW, y: y(base + minute.failed), height: y(base) - y(base + minute.failed), class: 'failed' }));
    }
    svg.append(group);
    const every = Math.max(1, Math.round(minutes.length / 6));
    if (index % every === 0) {
      svg.append(h('svg:text', { x: x + barW / 2, y: HEIGHT - 8, class: 'axis', 'text-anchor': 'middle' }, formatTime(minute.time)));
    }
  });
  svg.append(h('svg:line', { x1: PAD.left, x2: WIDTH - PAD.right, y1: y(0), y2: y(0), class: 'baseline' }));
  return svg;
}

function niceTicks(max) {
  const step = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10000].find((s) => max / s <= 5) ?? Math.ceil(max / 5);
  const ticks = [];
  for (let value = 0; value <= max + step - 1 && ticks.length < 8; value += step) ticks.push(value);
  if (ticks[ticks.length - 1] < max) ticks.push(ticks[ticks.length - 1] + step);
  return ticks;
}
