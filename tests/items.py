"""Reading a store the way tests want to: an item by key, an item's accounted size.

The server reads records (``Store.get_record``, ``get_many``); tests read
``Item``s. These helpers are that convenience, kept out of the product.
"""

from __future__ import annotations

from mbserver.record import Item, unpack
from mbserver.store import ITEM_OVERHEAD


def get_item(store, key: bytes) -> Item | None:
    """The live item for key as a GET sees it (bumped, marked fetched); None on a miss."""
    rec = store.get_record(key)
    return None if rec is None else unpack(rec)


def item_size(key: bytes, value: bytes) -> int:
    """The bytes an item is accounted for against the memory limit."""
    return ITEM_OVERHEAD + len(key) + len(value)
