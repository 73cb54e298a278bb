"""anomalib's reference anomaly detectors as benchmark peers, run on images we hand over as numpy arrays.

Benchmark-only: anomalib is never a dependency of defectmine. It lives in its own venv
(``make bench-venv`` -> ``benchmarks/.venv``, from ``benchmarks/requirements-anomalib.txt``); on a
GPU machine without internet its wheels come from ``benchmarks/anomalib_wheels.sh``.

    from anomalib_peers import PEERS, run_peer
    result = run_peer("padim", train, {"val": val, "test": test}, seed=0)
    result["scores"]["test"]  # float64 (n,), higher = more anomalous

Smoke run (tiny synthetic data, every peer for one epoch, exits non-zero if one fails):

    benchmarks/.venv/bin/python benchmarks/anomalib_peers.py --smoke
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import io
import logging
import random
import resource
import socket
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from _table import SPEED_SAMPLE, score_speed  # benchmarks/ is on sys.path: as a script or via side_by_side

PEERS = ("padim", "patchcore", "stfpm", "reverse_distillation", "cflow")
# Peers of other benchmarks, not of the side-by-side table: Draem (zero_label.py's peer). anomalib's Draem
# downloads DTD for its Perlin-anomaly textures unless given a folder; it gets the training images instead
# (as our own draem uses), so nothing is downloaded and no outside data enters.
EXTRA_PEERS = ("draem",)
TEXTURE_IMAGES = 200  # training images written out as Draem's texture source

# anomalib class per peer name.
_CLASSES = {
    "padim": "Padim",
    "patchcore": "Patchcore",
    "stfpm": "Stfpm",
    "reverse_distillation": "ReverseDistillation",
    "cflow": "Cflow",
    "draem": "Draem",
}

# Padim and Patchcore only collect features (one pass over train, then a Gaussian fit / coreset);
# the others are trained. Their defaults sit close to our own detectors' 25-epoch budget; Cflow gets
# fewer because each of its epochs makes one optimiser step per 64 feature vectors ("fibers") per
# layer, i.e. hundreds of steps per epoch already.
DEFAULT_EPOCHS = {"padim": 1, "patchcore": 1, "stfpm": 25, "reverse_distillation": 25, "cflow": 10, "draem": 25}
_MEMORY_BANK = frozenset({"padim", "patchcore"})

TRAIN_BATCH_SIZE = 32  # anomalib's datamodules default to 32 too

# ImageNet statistics: what anomalib's own PreProcessor normalises with (timm backbones expect it).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Loggers that would otherwise print (GPU/TPU availability, "Seed set", model init, ...).
_QUIET_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "anomalib")


def run_peer(name: str, train: np.ndarray, score_sets: dict[str, np.ndarray], *, seed: int = 0,
             device: str = "auto", epochs: int | None = None, progress: bool = False,
             backbone: str | None = None) -> dict:
    """Fit anomalib's ``name`` detector on ``train`` and score every array in ``score_sets``.

    Args:
        name: one of ``PEERS`` or ``EXTRA_PEERS``.
        train: uint8 ``(N, H, W, C)``, ``C`` in {1, 3}, ``H == W``, ``N >= 2``: normal images only.
        score_sets: set name -> uint8 array with the same ``H, W, C`` as ``train`` (may be empty).
        seed: seeds python, numpy and torch (CPU and CUDA) before the model is built, so the
            random-init backbone, training order, coreset sampling and Cflow's fiber order follow it.
        device: ``"auto"`` (cuda when available, else cpu), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        epochs: training epochs for stfpm / reverse_distillation / cflow (default ``DEFAULT_EPOCHS``);
            ignored by padim / patchcore, which always make exactly one feature-collection pass.
        progress: show Lightning's progress bar and anomalib's logs; otherwise print nothing.
        backbone: override of anomalib's default backbone. Only the smoke run uses it (to stay fast
            on CPU); benchmark rows use the default, reported in ``params["backbone"]``.

    What is run:
        * The anomalib 2.x LightningModule is built with its default backbone/layers/hyper-parameters
          but ``pre_trained=False``: no weights can be downloaded, so every backbone is randomly
          initialised (seeded). Stfpm has no ``pre_trained`` argument (its teacher is hard-wired to
          ImageNet weights); its teacher is built with ``pre_trained=False`` as well. While the model
          is built and run, any attempt to fetch weights (timm ``load_pretrained``, ``torch.hub``
          downloads) or to open an internet socket raises ``RuntimeError``.
        * anomalib's pre-processor, post-processor, evaluator and visualiser are switched off, so
          there is no resizing, no min-max/threshold normalisation and no image output. Instead the
          images are prepared here: grayscale repeated to 3 channels, scaled to [0, 1], normalised
          with ImageNet mean/std (``IMAGENET_MEAN``/``IMAGENET_STD``), at their own size.
        * Fitting runs the module's own recipe (its ``configure_optimizers``/``training_step``,
          Cflow's manual optimisation, the memory-bank fit at the end of Padim's/Patchcore's epoch)
          through a plain Lightning ``Trainer`` (not anomalib's ``Engine``): batch 32, shuffled with
          ``seed``, no validation, no logger, no checkpoints, ``default_root_dir`` a temporary
          directory that is deleted afterwards. Trained peers drop the last incomplete batch when
          ``N > 32`` (Cflow needs at least 64 feature vectors per batch and layer).
        * Scores: ``model.model(x).pred_score`` of anomalib's torch model in eval mode, i.e. the
          raw image score before any normalisation: the maximum of the anomaly map for Padim
          (Gaussian-blurred Mahalanobis distance), Stfpm (feature-distance product over layers) and
          Reverse Distillation (blurred 1 - cosine similarity summed over layers), Patchcore's
          re-weighted nearest-neighbour distance of the most anomalous patch. Cflow's own map is
          normalised by the maximum log-likelihood *of the batch* (so an image's score depends on
          the batch it was scored with); here that batch maximum is replaced by the per-layer
          maximum over the training images, computed once after training, which makes the score a
          property of the image alone: ``max over pixels of -(sum over layers of
          exp(loglik - train max))``, equal to anomalib's score up to that choice of reference and
          a constant.

    Image size: any square size >= 32 for Padim/Patchcore/Stfpm/Cflow; Reverse Distillation needs a
    multiple of 32 (its decoder upsamples the bottleneck back by fixed factors of 2, e.g. 112 fails);
    Cflow needs ``min(32, N) * (size // 32)**2 >= 64`` (at 128 px: N >= 4).

    Returns:
        ``{"scores": {set: float64 (n,)}, "fit_seconds", "ms_per_image_b32", "ms_per_image_b1",
        "peak_rss_mb", "params"}``. The speeds time ``_score`` (uint8 -> tensor, normalisation,
        transfer, forward, back to numpy) on up to 64 images of the first score set, after one
        warm-up call at that batch size, as ``benchmarks/fcdd_benchmark.py`` does for our detectors.
        ``fit_seconds`` covers building the model, training and (Cflow) the reference pass.
        ``peak_rss_mb`` is ``ru_maxrss`` of this whole process.

    Raises:
        ValueError: unknown ``name``, bad array shape/dtype, mismatched sizes, bad ``epochs``/``device``.
    """
    if name not in PEERS + EXTRA_PEERS:
        raise ValueError(f"unknown anomalib peer {name!r}; choose one of {', '.join(PEERS + EXTRA_PEERS)}")
    _check_images("train", train)
    if len(train) < 2:
        raise ValueError(f"train needs at least 2 images, got {len(train)}")
    if not score_sets:
        raise ValueError("score_sets is empty: give at least one set to score")
    for set_name, images in score_sets.items():
        _check_images(f"score_sets[{set_name!r}]", images)
        if images.shape[1:] != train.shape[1:]:
            raise ValueError(f"score_sets[{set_name!r}] has images of shape {images.shape[1:]}, "
                             f"train has {train.shape[1:]}; the models are fitted to one size")
    size = train.shape[1]
    if name == "reverse_distillation" and size % 32:
        raise ValueError(f"reverse_distillation needs an image size that is a multiple of 32, got {size}")
    if name == "cflow" and min(TRAIN_BATCH_SIZE, len(train)) * (size // 32) ** 2 < 64:
        # Cflow's training step needs >= 64 feature vectors of its deepest layer (stride 32) per batch.
        raise ValueError(f"cflow needs batch * (size // 32)**2 >= 64 feature vectors per training batch; "
                         f"{len(train)} train images of {size} px give fewer: use more or larger images")
    if name in _MEMORY_BANK:
        epochs = 1
    elif epochs is None:
        epochs = DEFAULT_EPOCHS[name]
    elif not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")

    with _quiet(progress), _no_downloads(), tempfile.TemporaryDirectory(prefix="anomalib_textures_") as textures:
        return _run(name, train, score_sets, seed=seed, device=device, epochs=epochs,
                    progress=progress, backbone=backbone, textures=Path(textures))


def _write_textures(train: np.ndarray, folder: Path) -> Path:
    """Up to TEXTURE_IMAGES training images as PNG files in `folder` (Draem's anomaly texture source)."""
    from PIL import Image

    for i, image in enumerate(train[:TEXTURE_IMAGES]):
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(folder / f"{i:04d}.png")
    return folder


def _run(name, train, score_sets, *, seed, device, epochs, progress, backbone, textures: Path) -> dict:
    import anomalib
    import lightning
    from lightning.pytorch import Trainer

    dev = _resolve_device(device)
    started = time.perf_counter()
    _seed_everything(seed)
    module = _build(name, size=train.shape[1], backbone=backbone,
                    textures=_write_textures(train, textures) if name == "draem" else None)

    n = len(train)
    batch_size = min(TRAIN_BATCH_SIZE, n)
    # An incomplete last batch is dropped only for trained peers with more than one batch: Padim and
    # Patchcore must see every image, and a full-sized last batch keeps Cflow's fiber count up.
    drop_last = name not in _MEMORY_BANK and n > batch_size and n % batch_size != 0
    loader = torch.utils.data.DataLoader(
        _ArrayDataset(train), batch_size=batch_size, shuffle=name not in _MEMORY_BANK,
        drop_last=drop_last, collate_fn=_collate, num_workers=0,
        generator=torch.Generator().manual_seed(seed))

    trainer_kwargs = dict(module.trainer_arguments)  # the model's own recipe (gradient_clip_val, ...)
    trainer_kwargs.pop("devices", None)
    with tempfile.TemporaryDirectory(prefix="anomalib_peer_") as root:
        trainer_kwargs.update(
            accelerator="gpu" if dev.type == "cuda" else "cpu",
            devices=[dev.index or 0] if dev.type == "cuda" else 1,
            max_epochs=epochs, logger=False, enable_checkpointing=False,
            enable_progress_bar=progress, enable_model_summary=progress, default_root_dir=root,
            num_sanity_val_steps=0, limit_val_batches=0, callbacks=[])
        trainer = Trainer(**trainer_kwargs)
        trainer.fit(module, train_dataloaders=loader)
    model = module.model.to(dev).eval()  # Lightning's teardown moves the module back to the CPU
    if name == "cflow":
        _calibrate_cflow(model, train, dev)
    _sync(dev)
    fit_seconds = time.perf_counter() - started

    scores = {set_name: _score(model, images, dev) for set_name, images in score_sets.items()}

    sample = next(iter(score_sets.values()))[:SPEED_SAMPLE]
    if len(sample) == 0:  # an empty first set: time on training images instead of not at all
        sample = train[:SPEED_SAMPLE]
    timings = score_speed(lambda images, batch: _score(model, images, dev, batch_size=batch), sample,
                          sync=lambda: _sync(dev))

    return {
        "scores": scores,
        "fit_seconds": fit_seconds,
        **timings,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "params": {
            "peer": name, "anomalib_class": _CLASSES[name], "backbone": backbone or _default_backbone(name),
            "pre_trained": False, "epochs": epochs, "train_batch_size": batch_size, "drop_last": drop_last,
            "image_size": int(train.shape[1]), "in_channels": int(train.shape[3]),
            "normalisation": "imagenet", "device": str(dev), "seed": seed,
            "score": "cflow: train-max reference" if name == "cflow" else "pred_score (raw)",
            "anomalib": anomalib.__version__, "torch": torch.__version__, "lightning": lightning.__version__,
            "threads": torch.get_num_threads(),
            "hparams": _plain(dict(module.hparams)),  # the constructor's arguments: layers, coreset ratio, ...
        },
    }


def _plain(value):
    """JSON-friendly copy of hyper-parameters (tuples -> lists, enums and the like -> str)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _default_backbone(name: str) -> str:
    """anomalib's default backbone for a peer, read off its constructor (what ``_build`` gets)."""
    import anomalib.models as models

    parameter = inspect.signature(getattr(models, _CLASSES[name]).__init__).parameters.get("backbone")
    return parameter.default if parameter is not None else "none (its own networks)"


def _build(name: str, *, size: int, backbone: str | None, textures: Path | None = None):
    """The anomalib LightningModule with pre_trained=False and all of its I/O components switched off."""
    import anomalib.models as models

    cls = getattr(models, _CLASSES[name])
    kwargs = {"pre_processor": False, "post_processor": False, "evaluator": False, "visualizer": False}
    if "pre_trained" in inspect.signature(cls.__init__).parameters:
        kwargs["pre_trained"] = False
    if backbone is not None:
        kwargs["backbone"] = backbone
    if textures is not None:
        kwargs["dtd_dir"] = textures
    if name == "reverse_distillation":
        # RD reads its input size off the pre-processor's transform; give it a Resize to our own size
        # for that, then drop the pre-processor so that nothing is resized or normalised twice.
        from anomalib.pre_processing import PreProcessor
        from torchvision.transforms.v2 import Resize

        kwargs["pre_processor"] = PreProcessor(transform=Resize((size, size)))
        module = cls(**kwargs)
        module.pre_processor = None
        return module
    if name == "stfpm":
        with _stfpm_random_teacher():
            return cls(**kwargs)
    return cls(**kwargs)


@contextlib.contextmanager
def _stfpm_random_teacher() -> Iterator[None]:
    """Build Stfpm's teacher without ImageNet weights: anomalib hard-codes ``pre_trained=True`` there."""
    import anomalib.models.image.stfpm.torch_model as stfpm_torch

    original = stfpm_torch.TimmFeatureExtractor

    def random_init(*args, **kwargs):
        kwargs["pre_trained"] = False
        return original(*args, **kwargs)

    stfpm_torch.TimmFeatureExtractor = random_init
    try:
        yield
    finally:
        stfpm_torch.TimmFeatureExtractor = original


class _ArrayDataset:
    """Index -> uint8 (H, W, C) image; conversion happens batch-wise in ``_collate``."""

    def __init__(self, images: np.ndarray) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.images[index]


def _collate(images: list[np.ndarray]):
    from anomalib.data import ImageBatch

    return ImageBatch(image=_to_tensor(np.stack(images)))


def _to_tensor(images: np.ndarray):
    """uint8 (B, H, W, C) -> float32 (B, 3, H, W), [0, 1] then ImageNet mean/std."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()


def _score(model, images: np.ndarray, dev, batch_size: int = 32) -> np.ndarray:
    """Raw image scores of anomalib's torch model (eval mode), float64 (n,)."""
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = _to_tensor(images[start:start + batch_size]).to(dev)
            out.append(model(x).pred_score.reshape(-1).double().cpu())
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float64)


def _calibrate_cflow(model, train: np.ndarray, dev) -> None:
    """Swap Cflow's batch-normalised anomaly map for one normalised by the training images' maxima."""
    generator = _CflowTrainReferenceMap(n_layers=len(model.pool_layers))
    model.anomaly_map_generator = generator
    generator.calibrating = True
    _score(model, train, dev)
    generator.calibrating = False


class _CflowTrainReferenceMap(torch.nn.Module):
    """Cflow's map with a fixed per-layer reference: the max log-likelihood over training images.

    anomalib subtracts the batch's max log-likelihood per layer before ``exp`` and then returns
    ``map.max() - map`` over the batch, which ties each image's score to its batch. Here both
    batch-dependent constants are replaced: the reference is fixed after training, and the map is
    ``-sum_l exp(loglik_l - ref_l)`` (upsampled bilinearly like anomalib's), so its max is
    anomalib's score with the training maxima as reference instead of the batch's, minus a constant.
    While ``calibrating`` it only records the per-layer maxima. float64 delays ``exp`` underflow.
    """

    def __init__(self, n_layers: int) -> None:
        super().__init__()
        self.calibrating = False
        self.reference = [float("-inf")] * n_layers

    def forward(self, distribution, height, width, image_size=None, **_):
        if self.calibrating:
            for layer, values in enumerate(distribution):
                self.reference[layer] = max(self.reference[layer], float(values.max()))
            n = distribution[0].numel() // (height[0] * width[0])
            return torch.zeros(n, *(tuple(image_size) if image_size is not None else (height[0], width[0])),
                               device=distribution[0].device)
        maps = []
        for layer, values in enumerate(distribution):
            prob = torch.exp(values.detach().double() - self.reference[layer])
            prob = prob.reshape(-1, height[layer], width[layer])
            if image_size is not None:
                prob = F.interpolate(prob.unsqueeze(1), size=tuple(image_size), mode="bilinear",
                                     align_corners=True).squeeze(1)
            maps.append(prob)
        return -torch.stack(maps).sum(0)


def _check_images(label: str, images) -> None:
    if not isinstance(images, np.ndarray):
        raise ValueError(f"{label} must be a numpy array, got {type(images).__name__}")
    if images.dtype != np.uint8:
        raise ValueError(f"{label} must be uint8, got {images.dtype}")
    if images.ndim != 4 or images.shape[3] not in (1, 3):
        raise ValueError(f"{label} must have shape (N, H, W, C) with C in (1, 3), got {images.shape}")
    if images.shape[1] != images.shape[2]:
        raise ValueError(f"{label} must hold square images (H == W), got {images.shape[1]}x{images.shape[2]}")
    if images.shape[1] < 32:
        raise ValueError(f"{label}: images must be at least 32x32 (the backbones downsample by up to 32), "
                         f"got {images.shape[1]}")


def _resolve_device(device: str):
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"bad device {device!r}: {error}") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch sees no CUDA device")
    return dev


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # CUDA generators too


def _sync(dev) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


@contextlib.contextmanager
def _quiet(progress: bool) -> Iterator[None]:
    """Unless ``progress``: no warnings, no Lightning/anomalib logs, nothing on stdout/stderr.

    What was captured is written to stderr if the run fails, so a failure still says why.
    """
    if progress:
        yield
        return
    levels = {}
    for name in _QUIET_LOGGERS:
        logger = logging.getLogger(name)
        levels[name] = logger.level
        logger.setLevel(logging.ERROR)
    captured = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(captured), \
                contextlib.redirect_stderr(captured):
            warnings.simplefilter("ignore")
            yield
    except BaseException:
        sys.stderr.write(captured.getvalue()[-5000:])
        raise
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


@contextlib.contextmanager
def _no_downloads() -> Iterator[None]:
    """Make every weight download (timm, torch.hub/torchvision) and every internet socket fail loudly.

    The peers are built with ``pre_trained=False``; this is the guarantee that nothing slips through,
    including weights a machine happens to have cached (timm would load those silently).
    """
    def refuse(what):
        def _raise(*args, **kwargs):
            named = [arg for arg in (*args, *kwargs.values()) if isinstance(arg, str)][:2]
            raise RuntimeError(f"anomalib_peers: {what} attempted ({', '.join(named) or 'no name'}); "
                               "peers must run with random-init backbones and download nothing")
        return _raise

    patches = [(torch.hub, "download_url_to_file", refuse("torch.hub download")),
               (torch.hub, "load_state_dict_from_url", refuse("torch.hub load_state_dict_from_url"))]
    try:  # timm >= 0.9 routes every pretrained=True through this one function
        import timm.models._builder as timm_builder

        patches.append((timm_builder, "load_pretrained", refuse("timm pretrained-weight load")))
    except ImportError:
        pass
    original_connect = socket.socket.connect

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            raise RuntimeError(f"anomalib_peers: network connection to {address!r} attempted")
        return original_connect(sock, address)

    patches.append((socket.socket, "connect", connect))
    saved = [(obj, attr, getattr(obj, attr)) for obj, attr, _ in patches]
    for obj, attr, replacement in patches:
        setattr(obj, attr, replacement)
    try:
        yield
    finally:
        for obj, attr, original in saved:
            setattr(obj, attr, original)


# ----------------------------------------------------------------------------------------- smoke run

def _smoke_data(seed: int = 0, size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """24 normal grayscale images of a smooth random texture; test = 8 normal + 8 with a bright blob."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size

    def texture() -> np.ndarray:
        img = np.full((size, size), 110.0)
        for _ in range(4):
            fx, fy = rng.uniform(1, 4, size=2)
            img += 18 * np.sin(2 * np.pi * (fx * xx + fy * yy) + rng.uniform(0, 2 * np.pi))
        return img + rng.normal(0, 3, (size, size))

    def blob(img: np.ndarray) -> np.ndarray:
        cy, cx = rng.uniform(0.2, 0.8, size=2)
        radius = rng.uniform(0.05, 0.1)
        return img + 110 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius ** 2))

    def pack(images: list[np.ndarray]) -> np.ndarray:
        return np.clip(np.stack(images), 0, 255).astype(np.uint8)[..., None]

    train = pack([texture() for _ in range(24)])
    test = pack([texture() for _ in range(8)] + [blob(texture()) for _ in range(8)])
    labels = np.array([0] * 8 + [1] * 8)
    return train, test, labels


def _smoke(peers: tuple[str, ...], device: str, backbone: str | None) -> int:
    from sklearn.metrics import roc_auc_score

    train, test, labels = _smoke_data()
    failed = []
    total = time.perf_counter()
    for name in peers:
        try:
            result = run_peer(name, train, {"test": test}, seed=0, device=device, epochs=1, backbone=backbone)
            scores = result["scores"]["test"]
            if scores.shape != (len(test),) or scores.dtype != np.float64 or not np.all(np.isfinite(scores)):
                raise RuntimeError(f"bad scores: shape {scores.shape}, dtype {scores.dtype}, "
                                   f"{int(np.sum(~np.isfinite(scores)))} non-finite")
            print(f"{name:21s} ok    AUROC {roc_auc_score(labels, scores):.3f}  "
                  f"fit {result['fit_seconds']:6.1f} s  {result['ms_per_image_b32']:7.1f} ms/img@32  "
                  f"{result['ms_per_image_b1']:7.1f} ms/img@1  backbone {result['params']['backbone']}  "
                  f"device {result['params']['device']}  rss {result['peak_rss_mb']:.0f} MB", flush=True)
        except Exception as error:  # noqa: BLE001 - the smoke reports every peer, then fails
            failed.append(name)
            print(f"{name:21s} FAIL  {type(error).__name__}: {error}", flush=True)
    print(f"{len(peers) - len(failed)}/{len(peers)} peers ok in {time.perf_counter() - total:.0f} s"
          + (f"; failed: {', '.join(failed)}" if failed else ""), flush=True)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="run every peer once on tiny synthetic data")
    parser.add_argument("--peers", default=",".join(PEERS), help="comma-separated subset of PEERS")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--backbone", default=None, help="override the default backbones (smoke only)")
    args = parser.parse_args(argv)
    if not args.smoke:
        parser.print_help()
        return 2
    peers = tuple(p.strip() for p in args.peers.split(",") if p.strip())
    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        parser.error(f"unknown peer(s) {', '.join(unknown)}; choose from {', '.join(PEERS)}")
    return _smoke(peers, args.device, args.backbone)


if __name__ == "__main__":
    sys.exit(main())
