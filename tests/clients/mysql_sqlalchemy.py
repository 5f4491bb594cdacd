"""SQLAlchemy (with its own pool, pool_pre_ping and pool_recycle) over PyMySQL through
poolguard, the TradeMate stack. Usage: mysql_sqlalchemy.py PORT

Checks: ORM create/read/update, an UPDATE that changes nothing still reports its matched row
(SQLAlchemy asks for CLIENT_FOUND_ROWS and relies on it), rollback on error, 8 threads moving
money between accounts concurrently with the total preserved, and connections recycled and
pre-pinged across a pause. Prints OK.
"""
import sys
import threading
import time
import random

from sqlalchemy import Integer, String, create_engine, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

port = int(sys.argv[1])
engine = create_engine(
    f"mysql+pymysql://app:app-secret@127.0.0.1:{port}/bank",
    pool_size=5, max_overflow=5, pool_pre_ping=True, pool_recycle=2, pool_timeout=30,
)


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "sa_accounts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner: Mapped[str] = mapped_column(String(20))
    balance: Mapped[int] = mapped_column(Integer)


def check(cond, what):
    if not cond:
        print("FAILED:", what)
        sys.exit(1)


Base.metadata.create_all(engine)
with Session(engine) as s:
    s.add_all([Account(owner=f"o{i}", balance=100) for i in range(10)])
    s.commit()
with Session(engine) as s:
    a = s.get(Account, 1)
    a.balance = 100  # unchanged value: FOUND_ROWS makes the UPDATE report 1 matched row
    s.execute(text("UPDATE sa_accounts SET balance = 100 WHERE id = 1"))
    r = s.execute(text("UPDATE sa_accounts SET balance = balance WHERE id = 1"))
    check(r.rowcount == 1, f"FOUND_ROWS rowcount {r.rowcount}")
    s.commit()
with Session(engine) as s:
    s.add(Account(owner="ghost", balance=1))
    try:
        s.execute(text("SELECT * FROM no_such_table"))
    except Exception:
        s.rollback()
    check(s.scalar(select(Account).where(Account.owner == "ghost")) is None, "rolled back")

errors = []


def mover(seed):
    rnd = random.Random(seed)
    try:
        for _ in range(25):
            src, dst = rnd.sample(range(1, 11), 2)
            with Session(engine) as s, s.begin():
                lo, hi = sorted((src, dst))
                rows = {acc.id: acc for acc in s.scalars(
                    select(Account).where(Account.id.in_([lo, hi])).order_by(Account.id).with_for_update())}
                rows[src].balance -= 1
                rows[dst].balance += 1
    except Exception as e:  # noqa: BLE001 - reported below
        errors.append(repr(e))


threads = [threading.Thread(target=mover, args=(i,)) for i in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
check(not errors, f"transfer errors: {errors[:3]}")
with Session(engine) as s:
    total = s.scalar(text("SELECT SUM(balance) FROM sa_accounts"))
    check(total == 1000, f"total preserved: {total}")

time.sleep(3)  # past pool_recycle: connections are replaced, pre-ping checks the rest
with engine.connect() as conn:
    check(conn.execute(text("SELECT COUNT(*) FROM sa_accounts")).scalar() == 10, "after recycle")
engine.dispose()
print("OK")
