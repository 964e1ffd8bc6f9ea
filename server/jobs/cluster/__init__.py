"""The job queue on Redis (AUDIOCRAFT_QUEUE_URL=redis://...), for API nodes and workers in several
processes, on one machine or many. store.py: the records and their keys; scripts.py: every change
that must be one decision (Lua); queue.py: RedisScheduler, the JobQueue the lanes and HTTP use."""
