"""One process of the deployment runs the drift job: a PostgreSQL advisory lock elects it (real server)."""

from __future__ import annotations

import psycopg2

from inferencedb.leader import Leadership
from tests.api.servers import free_port
from tests.db.helpers import wait_until

KEY = 424242


def test_one_candidate_leads_until_it_leaves_and_then_another_takes_over(empty_db: str):
    first, second = Leadership(empty_db, KEY, name="test"), Leadership(empty_db, KEY, name="test")
    try:
        assert first.held() and first.held()  # kept, not taken again
        assert not second.held() and not second.held()  # never waits for it
        first.close()
        assert second.held() and not first.held()
    finally:
        first.close()
        second.close()


def test_a_leader_whose_session_dies_loses_the_lead_to_the_next_candidate(empty_db: str):
    leader, candidate = Leadership(empty_db, KEY, name="test"), Leadership(empty_db, KEY, name="test")
    try:
        assert leader.held() and not candidate.held()
        admin = psycopg2.connect(empty_db)
        admin.autocommit = True
        with admin.cursor() as cur:  # the network drops it, or an operator does
            cur.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s",
                ("manyheads-test-leader",),
            )
            assert cur.fetchone()[0] == 1
        admin.close()
        wait_until(candidate.held, timeout_s=10)  # the server releases the lock as the session ends
        assert not leader.held()  # the old leader finds out at its next check, and stands down
    finally:
        leader.close()
        candidate.close()


def test_without_a_database_nobody_leads():
    assert not Leadership(f"postgresql://127.0.0.1:{free_port()}/none", KEY, name="test", timeout_s=1).held()
