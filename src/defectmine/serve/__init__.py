"""The inspection service: `defectmine serve RUN` scores uploaded images with a run's model over HTTP
(FastAPI + uvicorn, micro-batched) and serves a review page whose labels go to a `LabelSink`.

    from defectmine.serve import ServeSettings, create_app
    app = create_app("runs/parts", ServeSettings(max_batch=16, max_wait_ms=5))

Needs the `serve` extra: pip install 'defectmine[serve]'.
"""

from defectmine.serve.app import ServeSettings, create_app, require_serve_packages
from defectmine.serve.batching import MicroBatcher
from defectmine.serve.model import Scored, ServedModel, load_served_model
from defectmine.serve.review import CsvLabelSink, LabelSink, ReviewStore
from defectmine.serve.uploads import RequestError, UploadLimits, decode_upload

__all__ = [
    "CsvLabelSink", "LabelSink", "MicroBatcher", "RequestError", "ReviewStore", "Scored", "ServeSettings",
    "ServedModel", "UploadLimits", "create_app", "decode_upload", "load_served_model", "require_serve_packages",
]
