from typing import Any

from sqlalchemy.orm import Session

def register(
    session: Session,
    initial_state: str = "active",
    transaction_manager: Any = ...,
    keep_session: bool = False,
) -> None: ...
