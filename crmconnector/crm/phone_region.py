"""The local CRM's phone index follows the default region.

Stored numbers written without a country code ("020 7946 0958") are indexed in E.164 with the default
region in force when the record was written. When an admin changes CRMCONNECTOR_DEFAULT_REGION, those
numbers mean something else: the index is rebuilt once, at start, so that matching reads every stored
number with the region in force, as the contract says.
"""
from __future__ import annotations

import logging

from sqlalchemy import Connection, Engine, func, insert, select

from crmconnector.crm.local_schema import TABLES, phone_index
from crmconnector.crm.objects import PHONE_FIELDS
from crmconnector.matching.phone import try_normalize
from crmconnector.store import app_settings, utcnow

log = logging.getLogger(__name__)
REGION_KEY = "local_crm_phone_region"
CHUNK = 5_000


def follow_region(engine: Engine, region: str) -> bool:
    """Rebuild the phone index when it was built for another region; True when it did. The first run
    records the region (an index built before it was recorded is taken to be of the current one). One
    transaction: several processes starting at once rebuild it once."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":  # the others wait here, then see the region recorded
            conn.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(REGION_KEY, 0))))
        stored = conn.execute(select(app_settings.c.value).where(app_settings.c.key == REGION_KEY)).scalar()
        if stored is None:
            conn.execute(app_settings.insert().values(key=REGION_KEY, value=region, updated_at=utcnow()))
            return False
        if stored == region:
            return False
        log.info("the default region changed from %s to %s: re-reading the local CRM's phone numbers",
                 stored, region)
        indexed = sum(_reindex(conn, object_name, region) for object_name in PHONE_FIELDS)
        conn.execute(app_settings.update().where(app_settings.c.key == REGION_KEY).values(
            value=region, updated_at=utcnow()))
    log.info("phone numbers re-read for region %s: %d indexed", region, indexed)
    return True


def _reindex(conn: Connection, object_name: str, region: str) -> int:
    """Index the object's stored numbers again, `CHUNK` records at a time (by id: memory stays flat)."""
    table, fields = TABLES[object_name], PHONE_FIELDS[object_name]
    conn.execute(phone_index.delete().where(phone_index.c.object == object_name))
    page = select(table.c.Id, *(table.c[name] for name in fields)).order_by(table.c.Id).limit(CHUNK)
    count, last = 0, None
    while True:
        records = conn.execute(page if last is None else page.where(table.c.Id > last)).mappings().all()
        if not records:
            return count
        rows = [{"object": object_name, "record_id": record["Id"], "field": name, "e164": e164}
                for record in records for name in fields if (e164 := try_normalize(record[name], region))]
        if rows:
            conn.execute(insert(phone_index), rows)
        count += len(rows)
        last = records[-1]["Id"]
