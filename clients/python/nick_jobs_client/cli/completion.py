"""``nick-jobs completion bash|zsh|fish``: completion scripts made from the parser itself.

:func:`command_specs` walks the parser (a :class:`~nick_jobs_client.cli.parser.Parser`,
which remembers its arguments) for every command path, its subcommands, options and
choices; :func:`completion_script` writes them out as lookup functions in the shell's
language. Every command the parser has, those other distributions add included, completes.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from dataclasses import dataclass

from nick_jobs_client.cli.parser import Parser

SHELLS = ("bash", "zsh", "fish")


@dataclass
class CommandSpec:
    """What completes after one command path (``""``, ``"list"``, ``"schedules add"``)."""

    path: str
    subcommands: list[str]
    options: list[str]
    # The options that take a value, and the values of those that have ``choices``.
    takes_value: list[str]
    choices: dict[str, list[str]]
    # The values of its positionals that have ``choices`` (``completion``'s shells).
    positional_choices: list[str]


def command_specs(parser: Parser, path: str = "") -> list[CommandSpec]:
    """Every command path of ``parser``, its subcommands, options and choices."""
    spec = CommandSpec(path, [], [], [], {}, [])
    specs = [spec]
    for action in parser.arguments:
        if action.help == argparse.SUPPRESS and action.option_strings:
            continue
        if isinstance(action.choices, dict):  # the subcommands
            for name, sub in action.choices.items():
                spec.subcommands.append(name)
                specs += command_specs(sub, f"{path} {name}".strip())
            continue
        choices = [str(c) for c in action.choices] if action.choices is not None else []
        if not action.option_strings:
            spec.positional_choices += choices
            continue
        spec.options += action.option_strings
        if action.nargs != 0:
            spec.takes_value += action.option_strings
            for option in action.option_strings:
                if choices:
                    spec.choices[option] = choices
    return specs


def _words(words: Iterable[str]) -> str:
    text = " ".join(words)
    # Command names, options and choices are plain words: nothing in them needs quoting,
    # which a quote would break.
    if "'" in text or "\\" in text:
        raise ValueError(f"can't quote {text!r} for a shell")
    return f"'{text}'"


def _shell_functions(specs: list[CommandSpec], *, fish: bool = False) -> list[str]:
    """The lookup functions both completion scripts share: in sh syntax (bash and zsh) or
    fish's. ``_nick_jobs_choices PATH OPTION`` (OPTION empty: the positionals)."""
    tables: list[tuple[str, list[tuple[str, str]]]] = [
        ("subcommands", [(s.path, _words(s.subcommands)) for s in specs if s.subcommands]),
        ("options", [(s.path, _words(s.options)) for s in specs]),
        (
            "choices",
            [(f"{s.path}|{o}", _words(c)) for s in specs for o, c in s.choices.items()]
            + [(f"{s.path}|", _words(s.positional_choices)) for s in specs if s.positional_choices],
        ),
        ("takes_value", [(f"{s.path}|{o}", "") for s in specs for o in s.takes_value]),
    ]
    lines: list[str] = []
    for name, rows in tables:
        if fish:
            key = '"$argv[1]"' if name in {"subcommands", "options"} else '"$argv[1]|$argv[2]"'
            lines += [f"function __nick_jobs_{name}", f"    switch {key}"]
            if name == "takes_value":
                lines += [
                    "        case " + " ".join(_words([k]) for k, _ in rows),
                    "            return 0",
                ]
                lines += ["    end", "    return 1", "end", ""]
                continue
            for k, words in rows:
                lines += [f"        case {_words([k])}", f"            echo {words}"]
            lines += ["    end", "end", ""]
            continue
        key = '"$1"' if name in {"subcommands", "options"} else '"$1|$2"'
        lines += [f"_nick_jobs_{name}() {{", f"    case {key} in"]
        if name == "takes_value":
            lines += ["        " + "|".join(_words([k]) for k, _ in rows) + ") return 0 ;;"]
            lines += ["    esac", "    return 1", "}", ""]
            continue
        lines += [f"        {_words([k])}) echo {words} ;;" for k, words in rows]
        lines += ["    esac", "}", ""]
    return lines


# How a shell finds the command path in the words before the cursor, and whether the
# word under the cursor is an option's value: the same walk in each shell's syntax.
BASH_COMPLETE = """_nick_jobs_complete() {
    # $1: the word being completed; the words before it follow.
    local cur="$1" prev="" cmdpath="" skip=0 word
    shift
    shift  # the command's own name
    for word in "$@"; do
        prev="$word"
        if ((skip)); then
            skip=0
            continue
        fi
        case "$word" in
            --*=*) continue ;;
            -*)
                _nick_jobs_takes_value "$cmdpath" "$word" && skip=1
                continue
                ;;
        esac
        case " $(_nick_jobs_subcommands "$cmdpath") " in
            *" $word "*) cmdpath="${cmdpath:+$cmdpath }$word" ;;
        esac
    done
    if ((skip)); then
        _nick_jobs_candidates=$(_nick_jobs_choices "$cmdpath" "$prev")
    elif [[ "$cur" == -* ]]; then
        _nick_jobs_candidates=$(_nick_jobs_options "$cmdpath")
    else
        _nick_jobs_candidates=$(_nick_jobs_subcommands "$cmdpath")
        _nick_jobs_candidates+=" $(_nick_jobs_choices "$cmdpath" '')"
    fi
}
"""


def completion_script(parser: Parser, shell: str) -> str:
    specs = command_specs(parser)
    head = [
        f"# {shell} completion for nick-jobs, made by `nick-jobs completion {shell}`:",
        "# see docs/cli.md for where to put it.",
        "",
    ]
    if shell == "fish":
        body = [*_shell_functions(specs, fish=True), FISH_COMPLETE]
        return "\n".join(head + body)
    body = [*_shell_functions(specs), BASH_COMPLETE]
    if shell == "bash":
        body.append(BASH_HOOK)
    else:
        head.insert(0, "#compdef nick-jobs")
        body.append(ZSH_HOOK)
    return "\n".join(head + body)


BASH_HOOK = """_nick_jobs() {
    local _nick_jobs_candidates=""
    _nick_jobs_complete "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[@]:0:COMP_CWORD}"
    COMPREPLY=($(compgen -W "$_nick_jobs_candidates" -- "${COMP_WORDS[COMP_CWORD]}"))
}

# Without a candidate (a URL, an ID, an ini file), bash completes file names.
complete -o default -F _nick_jobs nick-jobs
"""

ZSH_HOOK = """_nick_jobs_zsh() {
    local _nick_jobs_candidates=""
    _nick_jobs_complete "${words[CURRENT]}" "${(@)words[1,CURRENT-1]}"
    local -a candidates
    candidates=(${=_nick_jobs_candidates})
    if ((${#candidates})); then
        compadd -- $candidates
    else
        _files
    fi
}

if [[ "${funcstack[1]}" == _nick-jobs ]]; then
    _nick_jobs_zsh "$@"
else
    compdef _nick_jobs_zsh nick-jobs
fi
"""

FISH_COMPLETE = """function __nick_jobs_candidates
    set -l words (commandline -opc)
    set -l cur (commandline -ct)
    set -l cmdpath ''
    set -l prev ''
    set -l skip 0
    set -e words[1]  # the command's own name
    for word in $words
        set prev $word
        if test $skip = 1
            set skip 0
            continue
        end
        switch $word
            case '--*=*'
                continue
            case '-*'
                __nick_jobs_takes_value "$cmdpath" $word; and set skip 1
                continue
        end
        if contains -- $word (string split ' ' -- (__nick_jobs_subcommands "$cmdpath"))
            set cmdpath (string trim -- "$cmdpath $word")
        end
    end
    if test $skip = 1
        string split -n ' ' -- (__nick_jobs_choices "$cmdpath" $prev)
    else if string match -q -- '-*' $cur
        string split -n ' ' -- (__nick_jobs_options "$cmdpath")
    else
        set -l candidates (__nick_jobs_subcommands "$cmdpath") (__nick_jobs_choices "$cmdpath" '')
        string split -n ' ' -- $candidates
    end
end

function __nick_jobs_has_candidates
    set -l candidates (__nick_jobs_candidates)
    test (count $candidates) -gt 0
end

# Without a candidate (a URL, an ID, an ini file), fish completes file names.
complete -c nick-jobs -n __nick_jobs_has_candidates -f -a '(__nick_jobs_candidates)'
"""
