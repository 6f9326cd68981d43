"""Deterministic, seeded generator of REES46-style e-commerce events.

The output has the nine columns of the public REES46 "eCommerce behavior data from multi
category store" files (``event_time`` as ``"2019-10-01 00:00:07 UTC"`` strings), so the
Kedro pipeline reads generated and real data alike. Users browse over October 2019 in
several sessions; a session views a few products, some get carted and some carts get
purchased. The purchase probability depends on what the primary table exposes (relative
price, product and session views, session length, brand, hour of day, earlier sessions and
earlier views of the product), so a model has real signal to learn.

Events are generated per block of users with vectorised numpy and written block by block
(one Parquet row group or CSV batch each), so memory stays bounded whatever the size.
The same seed and size give byte-identical files.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from purchase_contract.events import EVENT_TYPES, RAW_COLUMN_NAMES, RAW_COLUMNS

# The REES46 raw schema: the data contract (docs/data-contract.md) and RawEventsDataset use it.
RAW_EVENT_COLUMNS: tuple[str, ...] = RAW_COLUMN_NAMES
# The Arrow type each kind of raw column is written with (REES46 writes event_time as text).
_ARROW_TYPES = {
    "timestamp": pa.string(),
    "text": pa.string(),
    "integer": pa.int64(),
    "number": pa.float64(),
}
RAW_EVENT_SCHEMA = pa.schema([pa.field(c.name, _ARROW_TYPES[c.kind]) for c in RAW_COLUMNS])

# 20 k sessions: ~130 k events, ~7.8 k carted pairs (purchase rate ~0.38), well under a second.
DEFAULT_SESSIONS = 20_000
DEFAULT_SEED = 42
SUPPORTED_SUFFIXES = (".parquet", ".csv")

_VIEW, _CART, _PURCHASE = 0, 1, 2
_PERIOD_START = np.datetime64("2019-10-01T00:00:00", "s").astype(np.int64)
_PERIOD_DAYS = 31
_PERIOD_START_WEEKDAY = 1  # 2019-10-01 was a Tuesday (Monday=0)
_USERS_PER_BLOCK = 20_000  # ~330 k events per block: bounded memory, few row groups
_PROGRESS_SESSIONS = 100_000  # report progress only for outputs bigger than this
_N_PRODUCTS = 4_000
_POOL_SIZE = 6  # products a user keeps coming back to


class _Category(NamedTuple):
    code: str
    median_price: float
    share: float  # share of products and of browsing
    brands: tuple[str, ...]


_CATEGORIES: tuple[_Category, ...] = (
    _Category(
        "electronics.smartphone", 280.0, 0.20, ("samsung", "apple", "xiaomi", "huawei", "oppo")
    ),
    _Category(
        "electronics.audio.headphone", 60.0, 0.07, ("apple", "samsung", "sony", "jbl", "xiaomi")
    ),
    _Category("electronics.video.tv", 420.0, 0.06, ("samsung", "lg", "sony", "philips")),
    _Category("electronics.clocks", 180.0, 0.05, ("apple", "samsung", "garmin", "casio")),
    _Category("computers.notebook", 650.0, 0.07, ("lenovo", "hp", "asus", "acer", "apple")),
    _Category("computers.peripherals.printer", 160.0, 0.03, ("hp", "canon", "epson")),
    _Category(
        "appliances.kitchen.washer", 330.0, 0.06, ("samsung", "lg", "bosch", "indesit", "beko")
    ),
    _Category(
        "appliances.kitchen.refrigerators",
        520.0,
        0.05,
        ("samsung", "lg", "bosch", "indesit", "beko"),
    ),
    _Category(
        "appliances.environment.vacuum", 140.0, 0.06, ("samsung", "philips", "bosch", "xiaomi")
    ),
    _Category("appliances.personal.hair_cutter", 35.0, 0.03, ("philips", "braun", "xiaomi")),
    _Category("furniture.living_room.sofa", 380.0, 0.04, ("ikea", "hoff", "divan")),
    _Category("apparel.shoes", 75.0, 0.07, ("nike", "adidas", "puma", "respect")),
    _Category("kids.toys", 28.0, 0.05, ("lego", "hasbro", "mattel")),
    _Category("construction.tools.drill", 90.0, 0.05, ("bosch", "makita", "dewalt")),
    _Category("auto.accessories.videoregister", 85.0, 0.04, ("xiaomi", "neoline", "prestigio")),
    _Category("sport.bicycle", 310.0, 0.04, ("stels", "forward", "trek")),
    _Category("accessories.bag", 45.0, 0.03, ("samsonite", "tigernu", "xiaomi")),
)
_BRANDS: tuple[str, ...] = tuple(sorted({b for c in _CATEGORIES for b in c.brands}))
# Purchase-logit shift per brand: some brands convert better; the others draw a small one.
_STRONG_BRANDS = {
    "apple": 0.7,
    "samsung": 0.4,
    "xiaomi": 0.3,
    "bosch": 0.35,
    "lego": 0.4,
    "huawei": -0.3,
    "prestigio": -0.6,
    "respect": -0.5,
    "divan": -0.5,
}
_MISSING_BRAND_EFFECT = -0.4
# Browsing activity per hour of day (UTC): quiet nights, busy evenings.
_HOUR_ACTIVITY = np.array(
    [1, 0.6, 0.4, 0.3, 0.3, 0.5, 1, 2, 3, 4, 4.5, 5, 5, 5, 5, 5, 5.5, 6, 7, 8, 8, 7, 5, 2.5]
)
# Purchase-logit shift per hour of the cart event: evenings convert, nights and mornings less.
_HOUR_EFFECT = np.array(
    [-0.7] * 7 + [-0.5] * 5 + [0.0] * 6 + [0.9] * 5 + [0.2],
)
# Intercept of the purchase logit, tuned for a ~0.35-0.4 purchase rate among carted pairs.
_PURCHASE_INTERCEPT = -3.1


@dataclass(frozen=True)
class GenerationSummary:
    """What one generator run wrote."""

    path: Path
    events: int
    sessions: int
    users: int
    seconds: float


@dataclass(frozen=True)
class _Catalog:
    """Products shared by every block: ids, category, brand, list price, popularity."""

    product_id: np.ndarray  # int64 (n_products,)
    category: np.ndarray  # category index (n_products,)
    category_id: np.ndarray  # int64 per category
    has_category_code: np.ndarray  # bool (n_products,)
    brand: np.ndarray  # brand index, -1 when missing (n_products,)
    list_price: np.ndarray  # float64 (n_products,)
    popularity_cdf: np.ndarray  # per category, cdf shifted by the category index (sorted)
    product_by_cdf: np.ndarray  # product index for each entry of popularity_cdf
    brand_effect: np.ndarray  # purchase-logit shift per brand index


def _build_catalog(rng: np.random.Generator) -> _Catalog:
    n_categories = len(_CATEGORIES)
    shares = np.array([c.share for c in _CATEGORIES])
    category = rng.choice(n_categories, size=_N_PRODUCTS, p=shares / shares.sum())
    product_id = 1_000_000 + rng.choice(59_000_000, size=_N_PRODUCTS, replace=False)
    category_id = rng.integers(2_053_013_552_000_000_000, 2_175_419_595_000_000_000, n_categories)

    brand_index = {name: i for i, name in enumerate(_BRANDS)}
    brand = np.empty(_N_PRODUCTS, dtype=np.int64)
    for c, cat in enumerate(_CATEGORIES):
        in_category = np.flatnonzero(category == c)
        choices = np.array([brand_index[b] for b in cat.brands])
        brand[in_category] = rng.choice(choices, size=in_category.size)
    brand[rng.random(_N_PRODUCTS) < 0.07] = -1  # REES46 leaves brand empty for some products
    has_category_code = rng.random(_N_PRODUCTS) >= 0.06

    medians = np.array([c.median_price for c in _CATEGORIES])
    list_price = np.round(medians[category] * rng.lognormal(0.0, 0.55, _N_PRODUCTS), 2)
    list_price = np.maximum(list_price, 0.99)

    # Zipf-like popularity inside each category; one sorted cdf for all categories.
    popularity = 1.0 / rng.permutation(np.arange(1, _N_PRODUCTS + 1)) ** 0.8
    order = np.lexsort((np.arange(_N_PRODUCTS), category))
    cat_sorted = category[order]
    weights = popularity[order]
    totals = np.bincount(cat_sorted, weights=weights, minlength=n_categories)
    within = np.cumsum(weights) - np.concatenate(([0.0], np.cumsum(totals)))[cat_sorted]
    popularity_cdf = cat_sorted + within / totals[cat_sorted]

    brand_effect = np.array([_STRONG_BRANDS.get(b, float(rng.normal(0.0, 0.15))) for b in _BRANDS])
    return _Catalog(
        product_id=product_id.astype(np.int64),
        category=category,
        category_id=category_id.astype(np.int64),
        has_category_code=has_category_code,
        brand=brand,
        list_price=list_price,
        popularity_cdf=popularity_cdf,
        product_by_cdf=order,
        brand_effect=brand_effect,
    )


def _sample_products(
    catalog: _Catalog, rng: np.random.Generator, category: np.ndarray
) -> np.ndarray:
    """Product index per requested category, drawn by popularity inside the category."""
    position = np.searchsorted(catalog.popularity_cdf, category + rng.random(category.size))
    return catalog.product_by_cdf[np.minimum(position, catalog.product_by_cdf.size - 1)]


def _segment_starts(sizes: np.ndarray) -> np.ndarray:
    """Index of the first element of each consecutive segment of the given sizes."""
    return np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.int64)


def _user_ids(user_index: np.ndarray) -> np.ndarray:
    # Odd multiplier modulo 2**27 is a bijection: unique, REES46-looking 9-digit ids.
    return 500_000_000 + (user_index.astype(np.int64) * 2_654_435_761) % (1 << 27)


def _session_uuids(rng: np.random.Generator, n: int) -> pa.Array:
    """``n`` random version-4 UUID strings, formatted without a Python loop."""
    raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    hex_digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    digits = np.empty((n, 32), dtype=np.uint8)
    digits[:, 0::2] = hex_digits[raw >> 4]
    digits[:, 1::2] = hex_digits[raw & 0x0F]
    text = np.full((n, 36), ord("-"), dtype=np.uint8)
    for start, stop, out in ((0, 8, 0), (8, 12, 9), (12, 16, 14), (16, 20, 19), (20, 32, 24)):
        text[:, out : out + stop - start] = digits[:, start:stop]
    offsets = pa.py_buffer(np.arange(0, 36 * (n + 1), 36, dtype=np.int32))
    return pa.Array.from_buffers(pa.string(), n, [None, offsets, pa.py_buffer(text.tobytes())])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class _Users(NamedTuple):
    user_id: np.ndarray  # REES46-looking id per user of the block
    preferred: np.ndarray  # category index the user mostly browses
    pool: np.ndarray  # (users, _POOL_SIZE) favourite product indices
    propensity: np.ndarray  # hidden purchase-logit shift


class _Sessions(NamedTuple):
    user: np.ndarray  # user index per session, sessions grouped by user
    start: np.ndarray  # seconds since the period start, increasing within a user
    rank: np.ndarray  # sessions of the same user that started before
    pace: np.ndarray  # mean seconds between views
    uuid: pa.Array  # user_session strings


class _Pairs(NamedTuple):
    session: np.ndarray  # session index per (session, product) pair
    product: np.ndarray  # product index per pair
    interest: np.ndarray  # hidden appetite for the product
    views: np.ndarray  # view events of the product in the session
    price: np.ndarray  # price shown in the session (list price, sometimes discounted)


class _Views(NamedTuple):
    pair: np.ndarray  # pair index per view event, grouped by session
    time: np.ndarray  # seconds since the period start
    per_session: np.ndarray  # view events per session
    session_end: np.ndarray  # last view time per session
    pair_last: np.ndarray  # last view time per pair


def _category_draw(rng: np.random.Generator, size: int | tuple[int, int]) -> np.ndarray:
    shares = np.array([c.share for c in _CATEGORIES])
    return rng.choice(len(_CATEGORIES), size=size, p=shares / shares.sum())


def _draw_users(catalog: _Catalog, rng: np.random.Generator, first_user: int, n: int) -> _Users:
    """A preferred category, a pool of favourite products and a hidden propensity each."""
    preferred = _category_draw(rng, n)
    pool_category = np.where(
        rng.random((n, _POOL_SIZE)) < 0.8, preferred[:, None], _category_draw(rng, (n, _POOL_SIZE))
    )
    pool = _sample_products(catalog, rng, pool_category.ravel()).reshape(n, _POOL_SIZE)
    propensity = rng.normal(0.0, 0.2, n)
    return _Users(_user_ids(first_user + np.arange(n)), preferred, pool, propensity)


def _draw_sessions(rng: np.random.Generator, sessions_per_user: np.ndarray) -> _Sessions:
    """Session start times over the month (busy evenings), ordered within each user."""
    n = int(sessions_per_user.sum())
    user = np.repeat(np.arange(sessions_per_user.size), sessions_per_user)
    hour = rng.choice(24, size=n, p=_HOUR_ACTIVITY / _HOUR_ACTIVITY.sum())
    start = rng.integers(0, _PERIOD_DAYS, n) * 86_400 + hour * 3_600 + rng.integers(0, 3_600, n)
    start = start[np.lexsort((start, user))]
    rank = np.arange(n) - np.repeat(_segment_starts(sessions_per_user), sessions_per_user)
    pace = rng.lognormal(np.log(35.0), 0.5, n)
    return _Sessions(user, start, rank, pace, _session_uuids(rng, n))


def _draw_pairs(
    catalog: _Catalog, rng: np.random.Generator, users: _Users, sessions: _Sessions
) -> _Pairs:
    """Products looked at in each session: favourites, the preferred category, or anything."""
    slots = np.minimum(1 + rng.poisson(2.6, sessions.user.size), 12)
    slot_session = np.repeat(np.arange(sessions.user.size), slots)
    slot_user = sessions.user[slot_session]
    browse_category = np.where(
        rng.random(slot_session.size) < 0.6,
        users.preferred[slot_user],
        _category_draw(rng, slot_session.size),
    )
    product = np.where(
        rng.random(slot_session.size) < 0.4,
        users.pool[slot_user, rng.integers(0, _POOL_SIZE, slot_session.size)],
        _sample_products(catalog, rng, browse_category),
    )
    _, first_slot = np.unique(slot_session * _N_PRODUCTS + product, return_index=True)
    first_slot.sort()
    session, product = slot_session[first_slot], product[first_slot]
    interest = rng.normal(0.0, 1.0, session.size)
    views = np.minimum(1 + rng.poisson(0.7 * np.exp(0.45 * interest)), 9)
    discount = np.where(rng.random(session.size) < 0.12, rng.uniform(0.1, 0.3, session.size), 0)
    price = np.maximum(np.round(catalog.list_price[product] * (1.0 - discount), 2), 0.99)
    return _Pairs(session, product, interest, views, price)


def _draw_views(rng: np.random.Generator, pairs: _Pairs, sessions: _Sessions) -> _Views:
    """View events, shuffled inside their session and spaced by exponential gaps."""
    pair = np.repeat(np.arange(pairs.session.size), pairs.views)
    pair = pair[np.lexsort((rng.random(pair.size), pairs.session[pair]))]
    session = pairs.session[pair]
    per_session = np.bincount(session, minlength=sessions.user.size)
    first_view = _segment_starts(per_session)
    gaps = rng.exponential(sessions.pace[session])
    gaps[first_view] = 0.0
    elapsed = np.cumsum(gaps)
    offset = np.round(elapsed - np.repeat(elapsed[first_view], per_session)).astype(np.int64)
    time = sessions.start[session] + offset
    by_pair = np.lexsort((time, pair))
    pair_last = time[by_pair][np.cumsum(pairs.views) - 1]
    return _Views(pair, time, per_session, np.maximum.reduceat(time, first_view), pair_last)


def _earlier_product_views(
    user: np.ndarray, product: np.ndarray, rank: np.ndarray, views: np.ndarray
) -> np.ndarray:
    """Per pair: views of the same product by the same user in the user's earlier sessions."""
    order = np.lexsort((rank, product, user))
    sorted_views = views[order]
    running = np.cumsum(sorted_views) - sorted_views
    group_start = np.ones(order.size, dtype=bool)
    group_start[1:] = (np.diff(user[order]) != 0) | (np.diff(product[order]) != 0)
    earlier = np.empty(order.size, dtype=np.int64)
    earlier[order] = running - running[group_start][np.cumsum(group_start) - 1]
    return earlier


def _purchase_logit(
    catalog: _Catalog,
    users: _Users,
    sessions: _Sessions,
    pairs: _Pairs,
    views: _Views,
    *,
    cart_time: np.ndarray,
) -> np.ndarray:
    """Purchase log-odds of a carted pair: the signal a model must learn."""
    medians = np.array([c.median_price for c in _CATEGORIES])
    relative_price = pairs.price / medians[catalog.category[pairs.product]]
    session_minutes = (views.session_end - sessions.start)[pairs.session] / 60.0
    session_views = views.per_session[pairs.session]
    brand = catalog.brand[pairs.product]
    brand_effect = np.where(brand >= 0, catalog.brand_effect[brand], _MISSING_BRAND_EFFECT)
    weekday = (cart_time // 86_400 + _PERIOD_START_WEEKDAY) % 7
    pair_user = sessions.user[pairs.session]
    rank = sessions.rank[pairs.session]
    earlier_views = _earlier_product_views(pair_user, pairs.product, rank, pairs.views)
    return (
        _PURCHASE_INTERCEPT
        - 2.2 * np.log(relative_price)  # cheap for its category converts
        + 0.6 * np.minimum(pairs.views - 1, 4)
        + 1.2 * np.tanh(session_minutes / 8.0)  # a considered session converts ...
        - 0.08 * np.maximum(session_views - 10, 0)  # ... endless browsing does not
        + brand_effect
        + _HOUR_EFFECT[(cart_time // 3_600) % 24]
        + 0.15 * (weekday >= 5)
        + 0.45 * np.log1p(rank)  # returning users
        + 0.7 * np.minimum(earlier_views, 4)  # coming back to a product
        + users.propensity[pair_user]
    )


def _generate_block(
    catalog: _Catalog,
    rng: np.random.Generator,
    first_user: int,
    sessions_per_user: np.ndarray,
) -> pa.Table:
    """All events of one block of users (every session of a user lives in one block)."""
    users = _draw_users(catalog, rng, first_user, sessions_per_user.size)
    sessions = _draw_sessions(rng, sessions_per_user)
    pairs = _draw_pairs(catalog, rng, users, sessions)
    views = _draw_views(rng, pairs, sessions)
    n_pairs = pairs.session.size

    # Cart: more likely for products viewed often, wanted, and cheap for their category.
    medians = np.array([c.median_price for c in _CATEGORIES])
    relative_price = pairs.price / medians[catalog.category[pairs.product]]
    cart_logit = (
        -2.6 + 0.45 * (pairs.views - 1) + 0.5 * pairs.interest - 0.3 * np.log(relative_price)
    )
    carted = rng.random(n_pairs) < _sigmoid(cart_logit)
    cart_time = views.pair_last + rng.integers(5, 120, n_pairs)

    purchase_logit = _purchase_logit(catalog, users, sessions, pairs, views, cart_time=cart_time)
    purchased = carted & (rng.random(n_pairs) < _sigmoid(purchase_logit))
    # A few buy-now purchases skip the cart (REES46 has them); the primary table drops them.
    direct = ~carted & (rng.random(n_pairs) < 0.004)
    checkout_time = np.maximum(np.where(carted, cart_time, 0), views.session_end[pairs.session])
    purchase_time = checkout_time + rng.integers(5, 40, n_pairs)
    # Some carts are added twice; the primary table keeps the first.
    recart = carted & (rng.random(n_pairs) < 0.06)
    recart_time = cart_time + rng.integers(10, 600, n_pairs)

    cart_pairs, recart_pairs = np.flatnonzero(carted), np.flatnonzero(recart)
    purchase_pairs = np.flatnonzero(purchased | direct)
    event_pair = np.concatenate((views.pair, cart_pairs, recart_pairs, purchase_pairs))
    event_time = np.concatenate(
        (
            views.time,
            cart_time[cart_pairs],
            recart_time[recart_pairs],
            purchase_time[purchase_pairs],
        )
    )
    event_type = np.repeat(
        np.array([_VIEW, _CART, _PURCHASE], dtype=np.int8),
        [views.pair.size, cart_pairs.size + recart_pairs.size, purchase_pairs.size],
    )
    # ~1% of events are logged twice (exact duplicates), as tracking pixels do.
    keep = np.repeat(np.arange(event_pair.size), 1 + (rng.random(event_pair.size) < 0.01))
    event_pair, event_time, event_type = event_pair[keep], event_time[keep], event_type[keep]
    order = np.lexsort((event_type, pairs.session[event_pair], event_time))
    return _to_arrow(
        catalog,
        pairs,
        sessions.uuid,
        users.user_id[sessions.user],
        events=(event_pair[order], event_time[order], event_type[order]),
    )


def _to_arrow(
    catalog: _Catalog,
    pairs: _Pairs,
    session_uuid: pa.Array,
    session_user_id: np.ndarray,
    *,
    events: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> pa.Table:
    """Events given as (pair, time, type) arrays -> the REES46 columns and types."""
    event_pair, event_time, event_type = events
    product = pairs.product[event_pair]
    session = pairs.session[event_pair]
    category = catalog.category[product]
    codes = pa.array([c.code for c in _CATEGORIES] + [None], pa.string())
    code_index = np.where(catalog.has_category_code[product], category, len(_CATEGORIES))
    brands = pa.array([*_BRANDS, None], pa.string())
    brand = catalog.brand[product]
    timestamps = pa.array(_PERIOD_START + event_time, pa.timestamp("s"))
    columns = [
        # Arrow's cast prints "YYYY-MM-DD HH:MM:SS", several times faster than strftime.
        pc.binary_join_element_wise(timestamps.cast(pa.string()), " UTC", ""),
        pa.array(EVENT_TYPES, pa.string()).take(pa.array(event_type)),
        pa.array(catalog.product_id[product]),
        pa.array(catalog.category_id[category]),
        codes.take(pa.array(code_index)),
        brands.take(pa.array(np.where(brand >= 0, brand, len(_BRANDS)))),
        pa.array(pairs.price[event_pair]),
        pa.array(session_user_id[session]),
        session_uuid.take(pa.array(session)),
    ]
    return pa.Table.from_arrays(columns, schema=RAW_EVENT_SCHEMA)


def _blocks(sessions: int, seed: int) -> Iterator[tuple[pa.Table, int, int]]:
    """Event blocks until ``sessions`` sessions exist: (table, sessions, users) per block."""
    catalog = _build_catalog(np.random.default_rng([seed, 0]))
    remaining = sessions
    block = 0
    while remaining > 0:
        # One generator per block: the output does not depend on how blocks are consumed.
        rng = np.random.default_rng([seed, 1, block])
        per_user = np.minimum(rng.geometric(0.4, _USERS_PER_BLOCK), 15)
        cumulative = np.cumsum(per_user)
        if cumulative[-1] >= remaining:
            n_users = int(np.searchsorted(cumulative, remaining)) + 1
            per_user = per_user[:n_users].copy()
            per_user[-1] -= int(cumulative[n_users - 1] - remaining)
        table = _generate_block(catalog, rng, block * _USERS_PER_BLOCK, per_user)
        remaining -= int(per_user.sum())
        yield table, int(per_user.sum()), int(per_user.size)
        block += 1


def _say(line: str) -> None:
    """Progress and results go to stderr: stdout stays free for pipes."""
    sys.stderr.write(line + "\n")


def _check_arguments(path: Path, sessions: int, seed: int) -> None:
    if path.suffix not in SUPPORTED_SUFFIXES:
        raise ValueError(
            f"{path}: unsupported extension {path.suffix!r}; use one of {', '.join(SUPPORTED_SUFFIXES)}"
        )
    if sessions < 1:
        raise ValueError(f"sessions must be a positive integer, got {sessions}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")


@contextmanager
def _writer(path: Path, suffix: str) -> Iterator[pq.ParquetWriter | pacsv.CSVWriter]:
    """A block writer to ``path`` in the format named by ``suffix`` (.parquet or .csv)."""
    if suffix == ".parquet":
        with pq.ParquetWriter(path, RAW_EVENT_SCHEMA, compression="zstd") as writer:
            yield writer
        return
    with path.open("wb") as sink:
        # REES46 files are unquoted, header included; generated values never need quotes.
        sink.write((",".join(RAW_EVENT_COLUMNS) + "\n").encode())
        options = pacsv.WriteOptions(include_header=False, quoting_style="none")
        with pacsv.CSVWriter(sink, RAW_EVENT_SCHEMA, write_options=options) as writer:
            yield writer


def generate_events(
    path: str | Path,
    sessions: int = DEFAULT_SESSIONS,
    seed: int = DEFAULT_SEED,
    *,
    progress: bool = False,
) -> GenerationSummary:
    """Write ``sessions`` sessions of events to ``path`` (.parquet or .csv) and summarise.

    The file appears atomically (written under a temporary name, then renamed), so an
    interrupted run never leaves a partial file behind.
    """
    path = Path(path)
    _check_arguments(path, sessions, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    began = time.perf_counter()
    events = done_sessions = users = 0
    try:
        with _writer(partial, path.suffix) as writer:
            for table, block_sessions, block_users in _blocks(sessions, seed):
                writer.write_table(table)
                events += table.num_rows
                done_sessions += block_sessions
                users += block_users
                if progress and sessions > _PROGRESS_SESSIONS:
                    _say(
                        f"  {done_sessions:,}/{sessions:,} sessions, {events:,} events "
                        f"({time.perf_counter() - began:.1f} s)"
                    )
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return GenerationSummary(path, events, done_sessions, users, time.perf_counter() - began)


def ensure_dataset(
    path: str | Path, sessions: int = DEFAULT_SESSIONS, seed: int = DEFAULT_SEED
) -> Path:
    """Generate the data set at ``path`` only when no non-empty file is there yet."""
    path = Path(path)
    if not (path.is_file() and path.stat().st_size > 0):
        generate_events(path, sessions=sessions, seed=seed)
    return path


def _positive_int(text: str) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be non-negative, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="purchase-predict-generate",
        description=(
            "Generate synthetic REES46-style shop events (view, cart, purchase) with a "
            "learnable purchase signal. Same seed and size give byte-identical files."
        ),
        epilog=(
            "Sizes: about 6.6 events per session, so --sessions 150_000 gives ~1 M events "
            "and --sessions 1_500_000 ~10 M. Example: purchase-predict-generate "
            "--out data/01_raw/events.parquet --sessions 150_000 --seed 7"
        ),
    )
    parser.add_argument(
        "--out",
        required=True,
        type=Path,
        help="output file; the extension picks the format: .parquet or .csv",
    )
    parser.add_argument(
        "--sessions",
        type=_positive_int,
        default=DEFAULT_SESSIONS,
        help=f"number of user sessions to generate (default: {DEFAULT_SESSIONS:,})",
    )
    parser.add_argument(
        "--seed",
        type=_seed,
        default=DEFAULT_SEED,
        help=f"random seed (default: {DEFAULT_SEED})",
    )
    parser.add_argument(
        "--if-missing",
        action="store_true",
        help="do nothing when a non-empty file already exists at --out",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point ``purchase-predict-generate``."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.out.suffix not in SUPPORTED_SUFFIXES:
        parser.error(
            f"--out {args.out}: unsupported extension {args.out.suffix!r}; "
            f"use one of {', '.join(SUPPORTED_SUFFIXES)}"
        )
    if args.if_missing and args.out.is_file() and args.out.stat().st_size > 0:
        _say(f"{args.out} exists; not regenerating (--if-missing)")
        return 0
    try:
        summary = generate_events(args.out, args.sessions, args.seed, progress=True)
    except OSError as error:
        _say(f"purchase-predict-generate: cannot write {args.out}: {error}")
        return 1
    _say(
        f"wrote {summary.events:,} events ({summary.sessions:,} sessions, {summary.users:,} "
        f"users) to {summary.path} in {summary.seconds:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
