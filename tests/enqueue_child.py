"""A process that enqueues no-op durable jobs on a ZEO server, one at a
time: it commits one, prints its id and waits for a line on its standard
input before the next.  Used to ask another process about each job right
after its commit."""
import sys

import transaction
import ZEO

from cipher.background.durable import enqueue_call
from cipher.background.security import SYSTEM

import durable_jobs


def main(port, count):
    db = ZEO.DB(('127.0.0.1', int(port)), wait_timeout=60)
    conn = db.open()
    for _ in range(int(count)):
        job_id = enqueue_call(durable_jobs.noop, connection=conn, user=SYSTEM)
        transaction.commit()
        print(job_id, flush=True)
        if not sys.stdin.readline():
            break
    db.close()


if __name__ == '__main__':
    main(*sys.argv[1:])
