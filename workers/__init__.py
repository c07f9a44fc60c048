"""latentfarm data plane: the Celery task that runs a job, and one handler per job kind.

The task is a thin adapter: claim the job by id, call ``core``, save through ``storage``. TensorFlow is imported
only inside the handlers that need it, when a job runs, never when a worker process starts or forks.
"""
