import pytest
import torch

from defectmine.errors import ConfigError

from defectmine.models.training import BestState, mixed_batches, n_batches, train_epochs


def test_mixed_batches_cover_normals_once_and_mix_anomalies():
    batches = list(mixed_batches(100, 3, batch_size=16, anomaly_share=0.25, synthetic=True,
                                 generator=torch.Generator().manual_seed(0)))
    seen = torch.cat([b.normal for b in batches])
    assert len(set(seen.tolist())) == len(seen) >= 100 - 6  # a last batch under half size is dropped
    assert all(len(b.normal) + len(b.anomalous) + b.n_synthetic <= 16 for b in batches)
    assert all(len(b.anomalous) == 2 and b.n_synthetic == 2 for b in batches)
    assert all(int(b.anomalous.max()) < 3 for b in batches)
    assert len(batches) == n_batches(100, 16, 0.25)


def test_one_class_batches_are_all_normal():
    batches = list(mixed_batches(10, 0, batch_size=4, anomaly_share=0.25, synthetic=False,
                                 generator=torch.Generator().manual_seed(0)))
    assert all(len(b.anomalous) == 0 and b.n_synthetic == 0 for b in batches)
    assert sum(len(b.normal) for b in batches) == 10


def test_train_epochs_reduces_a_simple_loss_and_best_state_restores():
    torch.manual_seed(0)
    model = torch.nn.Linear(1, 1)
    x = torch.linspace(-1, 1, 32).unsqueeze(1)
    y = 3 * x
    optimizer = torch.optim.SGD(model.parameters(), lr=0.3)
    history = train_epochs(model, lambda m, b: ((m(b[0]) - b[1]) ** 2).mean(), lambda: [(x, y)],
                           optimizer, 20, quiet=True)
    assert history[-1] < history[0] * 0.01
    best = BestState()
    best.update(model, 0.9, 0)
    saved = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.zero_()
    assert not best.update(model, 0.5, 1)
    best.restore(model)
    assert torch.equal(model.weight, saved) and best.epoch == 0


def test_early_stopping_ends_training_after_patience_checks_without_gain(monkeypatch):
    from defectmine.data import ImageDataset, ImageSpec
    from defectmine.models.registry import create

    spec = ImageSpec(size=(16, 16), channels=1)
    generator = torch.Generator().manual_seed(0)
    normal = ImageDataset.from_tensor(torch.randint(0, 255, (12, 1, 16, 16), dtype=torch.uint8, generator=generator), spec)
    val = ImageDataset.from_tensor(torch.randint(0, 255, (6, 1, 16, 16), dtype=torch.uint8, generator=generator), spec,
                                   labels=[0, 0, 0, 1, 1, 1], split="val")
    values = iter([0.5, 0.9, 0.8, 0.7, 0.95, 0.99, 0.99, 0.99, 0.99, 0.99])  # best at check 2, then no gain twice
    import defectmine.models.trained as trained_module

    monkeypatch.setattr(trained_module, "validation_value", lambda metric, val, scores: next(values))
    detector = create("fcdd", epochs=10, eval_every=1, patience=2, width=4, batch_size=4, device="cpu", quiet=True)
    detector.fit(normal, val=val)
    assert detector.best_epoch_ == 1 and detector.stopped_epoch_ == 3 and len(detector.history_) == 4
    patient = create("fcdd", epochs=4, eval_every=1, width=4, batch_size=4, device="cpu", quiet=True).fit(normal, val=val)
    assert patient.stopped_epoch_ is None and len(patient.history_) == 4
    with pytest.raises(ConfigError, match="patience=0"):
        create("fcdd", patience=0)
