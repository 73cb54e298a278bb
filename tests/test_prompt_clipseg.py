"""The CLIPSeg backend on a tiny randomly initialised model built here: loading and ensemble code only
(random weights: the maps mean nothing, and no quality is claimed)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from defectmine.errors import ConfigError
from defectmine.prompt import load_clipseg, prompt_segment

transformers = pytest.importorskip("transformers")
WORDS = ["[PAD]", "[EOS]", "[UNK]", "a", "crack", "smooth", "surface", "scratch"]


@pytest.fixture(scope="module")
def clipseg_folder(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    # CLIP's text model pools at the end-of-text token: end every prompt with one, as CLIP's tokenizer does
    tokenizer.post_processor = processors.TemplateProcessing(single="$A [EOS]", special_tokens=[("[EOS]", 1)])
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]")
    tiny = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2)
    config = transformers.CLIPSegConfig(
        text_config=dict(tiny, vocab_size=len(WORDS), max_position_embeddings=16, bos_token_id=0, eos_token_id=1,
                         pad_token_id=0),
        vision_config=dict(tiny, image_size=32, patch_size=8, attention_dropout=0.2),
        projection_dim=16, reduce_dim=8, extract_layers=[1], decoder_num_attention_heads=2,
        decoder_intermediate_size=16,
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("clipseg")
    transformers.CLIPSegForImageSegmentation(config).save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


def test_clipseg_loads_and_ensembles_text_queries(clipseg_folder):
    backend = load_clipseg(clipseg_folder)
    images = torch.randint(0, 256, (3, 1, 40, 40), dtype=torch.uint8)
    fg_maps, bg_maps = backend.maps(images, ["a crack", "a scratch"], ["smooth surface"])
    assert fg_maps.shape == (2, 3, 40, 40) and bg_maps.shape == (1, 3, 40, 40)
    assert not torch.equal(fg_maps[0], fg_maps[1])  # each prompt gets its own map
    result = prompt_segment(backend, images, ["a crack", "a scratch"], ["smooth surface"])
    np.testing.assert_allclose(result.foreground, fg_maps.mean(0).numpy(), atol=1e-5)
    assert np.array_equal(result.mask, result.foreground > result.background)


def test_clipseg_mc_dropout_uses_the_models_dropout(clipseg_folder):
    backend = load_clipseg(clipseg_folder)
    assert backend.has_dropout
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    result = prompt_segment(backend, images, ["a crack"], ["smooth surface"], mc_samples=3, uncertainty="mc")
    assert result.mc.max() > 0
    assert not backend.model.training  # dropout is off again after the passes


def test_clipseg_folder_errors(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="config.json"):
        load_clipseg(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if it were not installed
    with pytest.raises(ConfigError, match="pip install"):
        load_clipseg(tmp_path)


def test_prompt_segment_command_with_text_prompts(clipseg_folder, tmp_path):
    import cv2
    from typer.testing import CliRunner

    from defectmine.cli import app

    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        cv2.imwrite(str(images / f"{i}.png"), np.random.default_rng(i).integers(0, 256, (40, 40)).astype(np.uint8))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["prompt-segment", "--data", str(images), "--clipseg", str(clipseg_folder),
                                      "-f", "a crack", "-b", "smooth surface", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert len(list((out / "masks").glob("*.png"))) == 2 and (out / "report.html").is_file()
