"""/api/v1/users"""

from __future__ import annotations

from eventreg.db import users
from eventreg.routes import crud
from eventreg.structs import NewUser, UserPatch

create = crud.create(NewUser, users.create)
list_all = crud.fetch_page(users.list_page)
get = crud.fetch(users.get)
update = crud.update(UserPatch, users.update)
delete = crud.delete(users.delete, "user deleted successfully")
