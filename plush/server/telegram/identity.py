"""Who a Telegram chat belongs to: the conversation its turns join and the owner whose facts they read.

By default an owner's Telegram chat and their plush are one companion: one conversation, one set of facts. The
plush is the one named for the user in `[telegram] conversations`, else the only plush of the user's household.
Anyone else (no household, or a household of several plushes and no entry) has a conversation of their own. A
group chat is always a conversation of its own: what a family says together is not one person's private chat.
"""

from __future__ import annotations

from dataclasses import dataclass

from plush.config import HouseholdConfig, TelegramConfig
from plush.owners import DEVICE_PREFIX, Owners, telegram_owner


@dataclass(frozen=True)
class ChatIdentity:
    """Where a message's turn goes."""

    conversation_id: str
    owner: str
    device_id: str
    """The name the turn log shows as its client: `telegram:<user id>` (or the group's)."""
    plush: str = ""
    """The plush whose conversation this chat shares, if any."""


class Identities:
    """Resolves (user, chat) to a `ChatIdentity` from the config's households and `[telegram] conversations`."""

    def __init__(self, settings: TelegramConfig, households: dict[str, HouseholdConfig]) -> None:
        self.owners = Owners(households)
        self._plush_of: dict[int, str] = {}
        for house in households.values():
            if len(house.devices) == 1:
                for user in house.telegram_users:
                    self._plush_of[user] = house.devices[0]
        self._plush_of.update(settings.conversations)

    def plush_of(self, user_id: int) -> str:
        """The plush this user's chat is joined to ('' for none)."""
        return self._plush_of.get(user_id, "")

    def private(self, user_id: int) -> ChatIdentity:
        """A user's private chat with the bot."""
        client = telegram_owner(user_id)
        plush = self.plush_of(user_id)
        if not plush:
            return ChatIdentity(client, self.owners.for_telegram_user(user_id), client)
        owner = self.owners.for_telegram_user(user_id)
        if owner == telegram_owner(user_id):  # no household of their own: the plush's owner shares its facts
            owner = self.owners.for_device(plush)
        return ChatIdentity(f"{DEVICE_PREFIX}{plush}", owner, client, plush)

    def group(self, user_id: int, chat_id: int) -> ChatIdentity:
        """A group chat: its own conversation; the facts are those of the (allowed) user who wrote."""
        owner = self.owners.for_telegram_user(user_id)
        plush = self.plush_of(user_id)
        if plush and owner == telegram_owner(user_id):
            owner = self.owners.for_device(plush)
        return ChatIdentity(f"telegram-group:{chat_id}", owner, telegram_owner(user_id))
