"""The Celery app: broker, queues, routing and the settings a job queue for long GPU jobs needs.

It lives in the control plane because the control plane sends the messages. The task itself is defined in
``workers.tasks`` and registered when a worker starts (the app's ``include``), so nodes that only submit never
import worker code or TensorFlow. Messages carry only a job id, as JSON: pickle is refused, so a writable broker
does not mean code execution.
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from scheduler.settings import Settings

TASK_NAME = "latentfarm.run_job"
QUEUES = ("gpu", "cpu")
EMBEDDED_QUEUE = "cpu"  # on the embedded default one in-process worker runs every job, whatever its queue
VISIBILITY_TIMEOUT = 24 * 3600  # above the longest job, or Redis redelivers a message that is still running


class FarmApp(Celery):
    """A Celery app that knows the latentfarm settings it was made from (a worker's task reads them) and the farm
    it sends messages for (``farm_id``: the store's identity; None for a database not yet upgraded to one)."""

    def __init__(self, main: str | None = None, settings: Settings | None = None, farm_id: str | None = None,
                 **kwargs: object) -> None:
        super().__init__(main, **kwargs)  # type: ignore[arg-type]
        self.settings = settings or Settings.from_env()
        self.farm_id = farm_id
        self.node_name: str | None = None  # the node name of the in-process worker running on this app, if any
        # a worker of this app also takes the farm's gpu queue while no live GPU worker consumes it (workers.monitor)
        self.gpu_standby = False

    def __reduce_keys__(self) -> dict[str, object]:
        """What a copy of the app is made from (Celery pickles apps for some pools): the settings too."""
        return {**super().__reduce_keys__(), "settings": self.settings, "farm_id": self.farm_id}

    def broker_queue(self, queue: str) -> str:
        """The broker's name of a job queue: on a farm, the queue within this farm (``latentfarm.<farm>.gpu``), so
        two farms that share a broker never take each other's messages; on the embedded default, the one queue its
        in-process worker consumes, whatever the spec named (within the farm too: the in-process broker is one per
        process, and a process may open two stores, as a notebook or a test does)."""
        if self.settings.embedded:
            queue = EMBEDDED_QUEUE
        return f"latentfarm.{self.farm_id[:12]}.{queue}" if self.farm_id else queue

    def spec_queue(self, broker_queue: str) -> str:
        """The name a spec gives the broker's queue ``broker_queue`` (``broker_queue``'s inverse on a farm)."""
        prefix = f"latentfarm.{self.farm_id[:12]}." if self.farm_id else ""
        return broker_queue.removeprefix(prefix) if prefix else broker_queue


def make_celery(settings: Settings, queues: tuple[str, ...] = QUEUES, farm_id: str | None = None) -> FarmApp:
    """A Celery app for ``settings`` and the farm ``farm_id``. Pass extra queue names that specs use beyond gpu and
    cpu."""
    app = FarmApp("latentfarm", settings, farm_id, broker=settings.broker_url, include=["workers.tasks"],
                  set_as_current=False)
    transport: dict[str, object] = {"visibility_timeout": VISIBILITY_TIMEOUT}
    if settings.embedded:
        transport["polling_interval"] = 0.01  # the memory transport polls; its 1 s default crawls
    else:
        # Redis: priorities 0..9 in 10 steps, lower number served first (see scheduler.broker.broker_priority).
        # kombu's own separator stays: it also joins the bindings that Celery's clients (celery inspect, Flower)
        # write, and a worker reading them with another one fails every remote-control command.
        transport.update(priority_steps=list(range(10)), queue_order_strategy="priority")
    if settings.broker_url.startswith(("redis://", "rediss://")):
        # kombu's Redis transport, but an item on a queue that is not a message is dropped, not fatal
        app.conf.broker_transport = "scheduler.redis_transport:Transport"
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        event_serializer="json",
        task_ignore_result=True,  # results live in the SQL store, not in a result backend
        task_acks_late=True,  # a job's message is acked when the job ends: a dead worker's job is redelivered
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,  # one long job at a time per process: no job waits behind another
        task_queues=[Queue(name, routing_key=name) for name in dict.fromkeys(app.broker_queue(q) for q in queues)],
        task_default_queue=app.broker_queue("cpu"),
        broker_transport_options=transport,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=True,
        task_send_sent_event=True,
    )
    return app
