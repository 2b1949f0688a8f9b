"""Our own checkpoints: safetensors + metadata naming the generator; a mismatch is refused unless forced."""

from __future__ import annotations

import json

import pytest
import torch

from engine.errors import UsageError
from engine.store import artifacts as A
from engine.store.checkpoint import (
    GeneratorIdentity,
    GeneratorMismatchError,
    generator_identity,
    load_checkpoint,
    load_model_checkpoint,
    save_checkpoint,
    save_model_checkpoint,
)
from engine.store.download import RetryPolicy
from fakeserver import sha, url_entry, write_registry

A_ID = GeneratorIdentity("stylegan2-celebahq-256", "a" * 64)
B_ID = GeneratorIdentity("stylegan2-ffhq-256", "b" * 64)
CONCEPTS = [{"name": "Smiling", "values": ["NOT Smiling", "Smiling"]}]


def save(path, generator=A_ID):
    tensors = {"enc.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    return save_model_checkpoint(path, tensors, kind="cbae", generator=generator, concepts=CONCEPTS,
                                 latent={"kind": "w", "shape": [14, 512]}, training={"steps": 10, "lr": 2e-4})


def test_metadata_round_trip(tmp_path):
    path = save(tmp_path / "c.safetensors")
    tensors, meta = load_model_checkpoint(path, kind="cbae", generator=A_ID)
    assert torch.equal(tensors["enc.weight"], torch.arange(6, dtype=torch.float32).reshape(2, 3))
    assert meta["kind"] == "cbae" and meta["format_version"] == 1
    assert meta["generator"] == {"name": "stylegan2-celebahq-256", "sha256": "a" * 64}
    assert meta["concepts"] == CONCEPTS and meta["latent"]["shape"] == [14, 512] and meta["training"]["steps"] == 10
    assert meta["gencbm_version"]
    assert not list(tmp_path.glob(".*.tmp"))  # written through a temporary file


def test_other_generator_is_refused_with_both_identities(tmp_path):
    path = save(tmp_path / "c.safetensors")
    with pytest.raises(GeneratorMismatchError) as info:
        load_model_checkpoint(path, generator=B_ID)
    msg = str(info.value)
    assert "stylegan2-celebahq-256" in msg and "stylegan2-ffhq-256" in msg
    assert "aaaaaaaa" in msg and "bbbbbbbb" in msg and "--force" in msg
    assert info.value.exit_code == 1


def test_force_loads_with_a_warning(tmp_path):
    path = save(tmp_path / "c.safetensors")
    with pytest.warns(UserWarning, match="loading anyway"):
        tensors, _ = load_model_checkpoint(path, generator=B_ID, force=True)
    assert "enc.weight" in tensors


def test_same_file_under_another_name_matches():
    assert GeneratorIdentity("my-copy.pkl", "a" * 64).matches(A_ID)
    assert not GeneratorIdentity("stylegan2-celebahq-256", "c" * 64).matches(A_ID)
    assert GeneratorIdentity("stylegan2-celebahq-256", None).matches(A_ID)  # no hash: the names decide


def test_wrong_kind_is_a_usage_error(tmp_path):
    path = save(tmp_path / "c.safetensors")
    with pytest.raises(UsageError, match="'cbae' checkpoint, not 'cc'"):
        load_model_checkpoint(path, kind="cc")


def test_plain_save_and_load_still_work(tmp_path):
    path = save_checkpoint(tmp_path / "p.safetensors", {"x": torch.ones(2)}, {"kind": "anything"})
    tensors, meta = load_checkpoint(path)
    assert meta == {"kind": "anything"} and torch.equal(tensors["x"], torch.ones(2))


def test_generator_identity_of_a_stored_artifact_and_of_its_path(store, server, tmp_path, monkeypatch):
    data = b"generator bytes" * 1000
    server.add("/g.pkl", data)
    monkeypatch.setenv("GENCBM_REGISTRY", write_registry(tmp_path / "r.json", [url_entry("test-g", server.url("/g.pkl"), "g.pkl", kind="generator")]))
    A.download("test-g", A.FetchOptions(policy=RetryPolicy(attempts=2, base_delay=0.001)))
    by_name = generator_identity("test-g")
    by_path = generator_identity(str(store / "artifacts" / "test-g" / "g.pkl"))
    assert by_name == GeneratorIdentity("test-g", sha(data)) == by_path
    other = tmp_path / "other.pkl"
    other.write_bytes(b"another generator")
    assert generator_identity(str(other)) == GeneratorIdentity("other.pkl", sha(b"another generator"))
    meta = json.loads(json.dumps({"generator": by_name.to_json()}))
    assert GeneratorIdentity.from_json(meta["generator"]) == by_name
