"""The review page: the queue as cards (overlay, name, score, decision, areas) with one button per label.

Drawn on the server from `ReviewStore.queue()`; a few lines of JavaScript post a click to
``POST /review/items/{id}/label`` and mark the card reviewed (``data-label`` on the card, the label in
its status line), so the page works without a framework and is easy to drive from a browser test.
"""

from __future__ import annotations

from defectmine.report.markup import _esc, page_head

_STYLE = """<style>
.queue{display:flex;flex-wrap:wrap;gap:12px}.card{border:1px solid #ccc;border-radius:6px;padding:8px;width:260px}
.card img{width:100%;image-rendering:pixelated}.card.reviewed{opacity:.55}.anomalous{color:#b00;font-weight:bold}
.card button{margin:2px}.status{font-size:90%;color:#333}
</style>"""

_SCRIPT = """<script>
async function review(button) {
  const card = button.closest('.card');
  const reviewer = document.getElementById('reviewer').value;
  const status = card.querySelector('.status');
  status.textContent = 'saving...';
  try {
    const answer = await fetch('review/items/' + card.dataset.id + '/label', {method: 'POST',
      headers: {'Content-Type': 'application/json'},
      body: JSON.stringify({label: button.dataset.label, reviewer: reviewer})});
    const body = await answer.json();
    if (!answer.ok) { status.textContent = 'error: ' + body.error; return; }
    card.classList.add('reviewed');
    card.dataset.label = body.label;
    status.textContent = 'labelled ' + body.label + ' by ' + body.reviewer;
  } catch (err) { status.textContent = 'error: ' + err; }
}
</script>"""


def review_page(queue: list[dict], labels: tuple[str, ...], threshold: float | None, kind: str) -> str:
    """The whole HTML page of the review queue (highest score first, reviewed items last)."""
    open_items = sum(1 for item in queue if item["label"] is None)
    cards = "\n".join(_card(item, labels) for item in queue) or "<p>No scored images yet: POST some to /score.</p>"
    threshold_text = "none (no decisions)" if threshold is None else f"{threshold:.6g}"
    return (page_head("defectmine review") + _STYLE
            + f'<p>{open_items} of {len(queue)} image(s) to review; {_esc(kind)}, threshold {threshold_text}. '
            'Confirm the decision or correct it; labels go to the labelling store.</p>'
            '<p><label>Reviewer <input id="reviewer" value="reviewer"></label></p>'
            f'<div class="queue">{cards}</div>{_SCRIPT}</body></html>')


def _card(item: dict, labels: tuple[str, ...]) -> str:
    decision = item["decision"] or "no threshold"
    image = (f'<img src="review/items/{_esc(item["id"])}/overlay.png" alt="overlay of {_esc(item["name"])}">'
             if item["overlay"] else "<p>(no overlay)</p>")
    confirm = _confirmed_label(item, labels)
    buttons = []
    if confirm is not None:
        buttons.append(_button("confirm", confirm, f"confirm: {confirm}"))
    buttons += [_button("correct", label, label) for label in labels]
    areas = ""
    if item["areas"]:
        shown = [f"{_esc(k)} {v['percent']:.2f}%" for k, v in item["areas"].items() if v["pixels"]]
        areas = f"<div>areas: {', '.join(shown) or 'none'}</div>"
    status = f"labelled {_esc(item['label'])} by {_esc(item['reviewer'])}" if item["label"] else "not reviewed"
    reviewed = ' reviewed' if item["label"] else ''
    label_attr = f' data-label="{_esc(item["label"])}"' if item["label"] else ''
    return (f'<div class="card{reviewed}" data-id="{_esc(item["id"])}" data-score="{item["score"]!r}"{label_attr}>'
            f'{image}<div><b>{_esc(item["name"])}</b></div>'
            f'<div>score {item["score"]:.5g} &middot; <span class="{_esc(decision)}">{_esc(decision)}</span></div>'
            f'{areas}<div>{"".join(buttons)}</div><div class="status">{status}</div></div>')


def _confirmed_label(item: dict, labels: tuple[str, ...]) -> str | None:
    """The label "confirm" writes: the model's decision as a label (its predicted class when it has one
    the reviewer may pick, else the only defect label there is); None when it cannot be said."""
    if item["decision"] == "normal":
        return "normal"
    if item["decision"] != "anomalous":
        return None
    if item.get("predicted_class") in labels:
        return item["predicted_class"]
    defect_labels = [label for label in labels if label != "normal"]
    return defect_labels[0] if len(defect_labels) == 1 else None


def _button(kind: str, label: str, text: str) -> str:
    return (f'<button class="{kind}" data-label="{_esc(label)}" onclick="review(this)">{_esc(text)}</button>')

