"""/api/v1/events"""

from __future__ import annotations

from eventreg.db import events
from eventreg.routes import crud
from eventreg.routes.crud import public
from eventreg.structs import EventPatch, NewEvent

create = crud.create(NewEvent, events.create)
list_all = crud.fetch_page(public(events.list_page))
list_by_organizer = crud.fetch_page_of(public(events.list_by_organizer))
get = crud.fetch(public(events.get))
update = crud.update(EventPatch, events.update)
delete = crud.delete(events.delete, "event deleted successfully")
