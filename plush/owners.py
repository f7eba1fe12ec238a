"""Who owns what: every fact and every turn belongs to one owner, and no prompt carries another owner's.

An owner is a household (`[owners.NAME]` in plush.toml: its plushes and Telegram users share facts and recall),
or, for a plush (or text client) in no household, that plush alone: `device:<id>`. So by default nothing is
shared between plushes. Facts kept from before owners existed belong to `legacy`, which no prompt reads (the
owner gives them to someone with `plush memory move`), because nobody can tell any more whom they were meant for.

This module sits below the device and the server (the config checks household names with it), so it imports
neither.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from plush.errors import PlushError

if TYPE_CHECKING:
    from plush.config import HouseholdConfig

LEGACY_OWNER = "legacy"
"""The owner of facts stored before owners existed: only `plush memory` sees them."""
DEVICE_PREFIX = "device:"
TELEGRAM_PREFIX = "telegram:"
HOUSEHOLD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
"""A household's name: no colon, so it never looks like `device:<id>`."""


def device_owner(device_id: str) -> str:
    """The owner of a plush (or text client) that is in no household: itself alone."""
    return f"{DEVICE_PREFIX}{device_id}"


def telegram_owner(user_id: int) -> str:
    """The owner of a Telegram user who is in no household: that user alone."""
    return f"{TELEGRAM_PREFIX}{user_id}"


def check_household_name(name: str) -> str:
    """`name` when it can name a household; ValueError (for the config check) otherwise."""
    if name == LEGACY_OWNER:
        raise ValueError(f"'{LEGACY_OWNER}' is reserved for facts kept from before owners; choose another name")
    if not HOUSEHOLD_NAME.fullmatch(name):
        raise ValueError(f"household name '{name}' may hold only letters, digits, '-' and '_' (e.g. 'home')")
    return name


class Owners:
    """The households from the config, and the owner of each device or Telegram user."""

    def __init__(self, households: Mapping[str, HouseholdConfig] | None = None) -> None:
        households = households or {}
        self.households: tuple[str, ...] = tuple(sorted(households))
        self._by_device = {device: name for name, house in households.items() for device in house.devices}
        self._by_telegram = {user: name for name, house in households.items() for user in house.telegram_users}

    def for_device(self, device_id: str) -> str:
        """The owner of a turn from this plush or text client: its household, or itself alone."""
        return self._by_device.get(device_id) or device_owner(device_id)

    def for_telegram_user(self, user_id: int) -> str:
        """The owner of a turn from this Telegram user: their household, or themselves alone."""
        return self._by_telegram.get(user_id) or telegram_owner(user_id)

    def default(self) -> str | None:
        """The owner a command means when it names none: the household, when there is exactly one."""
        return self.households[0] if len(self.households) == 1 else None

    def check(self, owner: str, seen: Iterable[str] = ()) -> str:
        """`owner` when facts may be given to it; otherwise a PlushError saying which owners there are.

        `seen` are owners the database knows (from its conversations), offered in the message.
        """
        if owner in self.households:
            return owner
        household = self._household_of(owner)
        if household is not None:
            raise PlushError(f"'{owner}' belongs to the household '{household}': use --owner {household}")
        if _alone(owner):
            return owner
        if owner == LEGACY_OWNER:
            problem = f"'{LEGACY_OWNER}' only keeps facts from before owners (no plush sees them)"
        else:
            problem = f"there is no owner '{owner}' (a plush in no household is device:<its id>)"
        raise PlushError(f"{problem}; owners: {self.describe(seen)}")

    def describe(self, seen: Iterable[str] = ()) -> str:
        """The owners a person may name, for messages: the households, then the others the database knows."""
        others = {o for o in seen if o not in self.households and _alone(o) and self._household_of(o) is None}
        names = [*self.households, *sorted(others)]
        return ", ".join(names) if names else "none yet (no household in plush.toml, and no plush has talked)"

    def _household_of(self, owner: str) -> str | None:
        """The household of `device:<id>` (or a bare device id) or `telegram:<id>`, when it has one."""
        if (household := self._by_device.get(owner.removeprefix(DEVICE_PREFIX))) is not None:
            return household
        user = owner.removeprefix(TELEGRAM_PREFIX)
        return self._by_telegram.get(int(user)) if owner.startswith(TELEGRAM_PREFIX) and user.isdigit() else None


def _alone(owner: str) -> bool:
    """Whether `owner` names one plush or one Telegram user (`device:<id>`, `telegram:<number>`)."""
    if owner.startswith(DEVICE_PREFIX):
        return len(owner) > len(DEVICE_PREFIX)
    return owner.startswith(TELEGRAM_PREFIX) and owner.removeprefix(TELEGRAM_PREFIX).isdigit()
