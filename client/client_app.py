"""The hospital's ClientApp: thin handlers that read the site's own files and call ``client.task``.

Every reply carries only what may leave a site: a handshake verdict, DP label counts, DP model
updates (tabular weights, narrative adapters) with the epsilon spent, and evaluation figures.
Problems with the site's own data or budget become error replies (details in the site's log),
never a crash of the federation.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client.site_config import SiteConfig
from common.data import load_site_data
from common.errors import BudgetExceededError, DataError, InputError
from common.handshake import HandshakeResult, check_compatibility
from common.run_plan import RunPlan
from common.schema import Schema
from fedsynth import __version__

log = logging.getLogger("fedsynth.client")
SiteResolver = Callable[[Context], SiteConfig]
ERROR_BAD_DATA, ERROR_BUDGET, ERROR_INPUT = 4001, 4002, 4003
_BAD_DATA = ("the site's data file failed validation against the schema; the site's log lists "
             "the rows, columns and fixes")
_SITE_PROBLEM = ("the site could not take part (a problem with its own data or settings); the "
                 "site's log says what and how to fix it")


def _error_reply(msg: Message, exc: InputError) -> Message:
    """An error reply that says what kind of problem the site has, never its details.

    Messages about data (validation, encoding) quote cell values, so only a budget refusal, which
    speaks of the site's own DP spend, travels verbatim; the rest stays in the site's log.
    """
    log.error("%s", exc)
    if isinstance(exc, BudgetExceededError):
        return Message(Error(code=ERROR_BUDGET, reason=" ".join(str(exc).split())), reply_to=msg)
    if isinstance(exc, DataError):
        return Message(Error(code=ERROR_BAD_DATA, reason=_BAD_DATA), reply_to=msg)
    return Message(Error(code=ERROR_INPUT, reason=_SITE_PROBLEM), reply_to=msg)


def make_client_app(resolve_site: SiteResolver) -> ClientApp:
    """A ClientApp whose site settings come from ``resolve_site`` (node config, or a simulation)."""
    app = ClientApp()

    @app.query("handshake")
    def handshake(msg: Message, context: Context) -> Message:
        """Compare schema hash and version, and check the site's data file, before any training."""
        offer = msg.content["handshake"]
        name = str(context.node_id)
        try:
            site = resolve_site(context)
            name = site.name
            if site.exclude:
                result = HandshakeResult(False, "site asked to be excluded (node config exclude=true)")
            else:
                schema = Schema.load(site.schema_path)
                result = check_compatibility(schema.hash, __version__, str(offer["schema_hash"]),
                                             str(offer["version"]))
                if result.accepted:
                    load_site_data(site.data_path, schema, bad_rows=site.bad_rows,
                                   quarantine_path=site.state_dir / "quarantine.csv")
        except DataError as exc:
            log.error("%s", exc)
            result = HandshakeResult(False, _BAD_DATA)
        except InputError as exc:
            result = HandshakeResult(False, " ".join(str(exc).split()))
        reply = ConfigRecord({"accepted": result.accepted, "reason": result.reason, "site": name,
                              "version": __version__})
        return Message(RecordDict({"handshake": reply}), reply_to=msg)

    @app.query("label_counts")
    def label_counts(msg: Message, context: Context) -> Message:
        """DP label counts of the site's train split, charged to its budget before they leave."""
        from client.task import SiteTask  # torch loads only for training: handshakes start fast

        try:
            task = SiteTask(resolve_site(context), RunPlan.from_config(msg.content["plan"]))
            counts, tables = task.label_counts()
            epsilon = task.epsilon_spent()
        except InputError as exc:
            return _error_reply(msg, exc)
        released = {"counts": [float(c) for c in counts]}
        if tables is not None:
            released["tables"] = [float(c) for c in tables.ravel()]
        content = RecordDict({"counts": MetricRecord(released),
                              "privacy": MetricRecord({"epsilon": epsilon})})
        return Message(content, reply_to=msg)

    def train(msg: Message, context: Context) -> Message:
        """One round of local DP-SGD from the global weights: the tabular generator's
        (``train.vae``, ``train.ddpm``) or the narrative adapters' (``train.lora``)."""
        from client.task import SiteTask
        from client.text_task import NarrativeTask

        try:
            plan = RunPlan.from_config(msg.content["plan"])
            site = resolve_site(context)
            task = NarrativeTask(site, plan) if msg.metadata.message_type == "train.lora" \
                else SiteTask(site, plan)
            round_ = int(msg.content["round"]["round"])
            weights, epsilon = task.train_round(round_, msg.content["weights"].to_numpy_ndarrays())
        except InputError as exc:
            return _error_reply(msg, exc)
        content = RecordDict({"weights": ArrayRecord(weights),
                              "privacy": MetricRecord({"epsilon": epsilon, "round": round_})})
        return Message(content, reply_to=msg)

    for action in ("vae", "ddpm", "lora"):
        app.train(action)(train)

    @app.evaluate("tabular")
    def evaluate(msg: Message, context: Context) -> Message:
        """Score the received synthetic sets (and the site's local-only baseline) on its
        held-out data; figures and the site's spend per model go back, nothing else."""
        from client.evaluation import evaluate_received
        from client.task import SiteTask

        try:
            task = SiteTask(resolve_site(context), RunPlan.from_config(msg.content["plan"]))
            request = msg.content["evaluate"]
            received = {name: bytes(data) for name, data in msg.content["synthetic"].items()}
            results = evaluate_received(task, received, int(request["local_only_records"]),
                                        int(request["seed"]))
        except InputError as exc:
            return _error_reply(msg, exc)
        return Message(RecordDict({"evaluation": ConfigRecord({"json": json.dumps(results)})}),
                       reply_to=msg)

    return app


app = make_client_app(lambda context: SiteConfig.from_node_config(context.node_config))
