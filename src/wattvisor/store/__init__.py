"""The controller's database: SQLAlchemy tables, engines and Alembic migrations.

Other packages get engines and transactions from here and keep ORM details to themselves.
"""

from wattvisor.store import compute_tables as compute_tables
from wattvisor.store import energy_tables as energy_tables
from wattvisor.store import generations as generations
from wattvisor.store import migration_tables as migration_tables
from wattvisor.store import task_tables as task_tables
from wattvisor.store import trust_tables as trust_tables
from wattvisor.store.engine import as_utc, make_engine, read_transaction, write_transaction
from wattvisor.store.migrate import migrate
from wattvisor.store.models import Base

__all__ = ["Base", "as_utc", "make_engine", "migrate", "read_transaction", "write_transaction"]
