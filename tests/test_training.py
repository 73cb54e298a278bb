import torch

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
