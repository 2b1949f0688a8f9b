"""Importing NVIDIA network pickles: official-format files written by tests/nvidia_format.py.

- Round trips: tiny random generators over architectures, resolutions, conditioning, mapping
  options, fp16 resolutions, clamping, both file flavours (stylegan3, stylegan2-ada) and both
  networks (G_ema, G), chosen so that every pair of option values occurs in some case. The loaded
  generator must compute exactly (bit for bit) what the original module computes.
- Safety: forbidden globals, hostile storages and embedded module source never execute.
- Errors: every damaged or foreign file raises CorruptFileError (exit code 4), one line.
- The store: one safetensors conversion per pickle, reused without unpickling, rebuilt when damaged
  or when the pickle changes.
"""

from __future__ import annotations

import collections
import itertools
import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.errors import CorruptFileError
from engine.generators import load_generator, z_from_seeds
from engine.generators import nvidia_pickle
from engine.generators.nvidia_pickle import load_network_pickle, read_network_pickle
from engine.generators.stylegan2 import one_hot
from nvidia_format import (
    SHARED_STYLEGAN2, attribute_keys, dump_pickle, effective_structure, generator_record, iter_records,
    pickle_bytes, snapshot, tiny_generator, write_network_pickle,
)


@pytest.fixture(autouse=True)
def _store(tmp_path, monkeypatch):
    """Every test gets its own empty artifact store."""
    home = tmp_path / "gencbm-home"
    monkeypatch.setenv("GENCBM_HOME", str(home))
    return home


# --------------------------------------------------------------------------------------------
# Round trips over a pairwise covering of the options.

FACTORS = {
    "architecture": ["orig", "skip", "resnet"],
    "resolution": [8, 16, 32],
    "c_dim": [0, 4],
    "mapping": ["nl2", "nl3-lr1-embed", "no-w-avg", "default"],
    "num_fp16_res": [0, 2, 4],
    "conv_clamp": [None, 256],
    "fmt": ["stylegan3", "ada"],
    "key": ["G_ema", "G"],
}
MAPPINGS = {
    "nl2": dict(num_layers=2),
    "nl3-lr1-embed": dict(num_layers=3, lr_multiplier=1.0, embed_features=8, layer_features=24),
    "no-w-avg": dict(num_layers=1, w_avg_beta=None),
    "default": {},  # 8 layers, lr 0.01, w_avg_beta 0.998
}


def _pairwise_cases(factors: dict) -> list[dict]:
    """A small deterministic set of cases in which every pair of values of two factors occurs
    (greedy: repeatedly take the first combination that covers the most uncovered pairs)."""
    names = list(factors)
    pairs_of = {}
    for values in itertools.product(*factors.values()):
        case = tuple(zip(names, values))
        pairs_of[case] = set(itertools.combinations(case, 2))
    uncovered = set().union(*pairs_of.values())
    cases = []
    while uncovered:
        best = max(pairs_of, key=lambda case: len(pairs_of[case] & uncovered))
        cases.append(dict(best))
        uncovered -= pairs_of[best]
    return cases


CASES = _pairwise_cases(FACTORS)


def _case_id(case: dict) -> str:
    clamp = "clamp256" if case["conv_clamp"] else "noclamp"
    return f"{case['architecture']}{case['resolution']}-c{case['c_dim']}-{case['mapping']}-fp16x{case['num_fp16_res']}-{clamp}-{case['fmt']}-{case['key']}"


def _build(case: dict, seed: int):
    return tiny_generator(
        seed, c_dim=case["c_dim"], img_resolution=case["resolution"], mapping_kwargs=MAPPINGS[case["mapping"]],
        channel_base=256, channel_max=16, architecture=case["architecture"], num_fp16_res=case["num_fp16_res"],
        conv_clamp=case["conv_clamp"],
    )


def _inputs(G, seeds=(0, 7), class_idx=1):
    z = z_from_seeds(seeds, G.z_dim)
    c = one_hot(class_idx, G.c_dim, len(seeds)) if G.c_dim else None
    return z, c


def _ws(G, psi=0.7, cutoff=None):
    with torch.no_grad():
        return G.mapping(*_inputs(G), truncation_psi=psi, truncation_cutoff=cutoff)


def _truncations(G):
    if not hasattr(G.mapping, "w_avg"):  # no w_avg: truncation is impossible (and must say so)
        with pytest.raises(ValueError, match="w_avg"):
            _ws(G, psi=0.7)
        return [(1.0, None)]
    return [(1.0, None), (0.7, None), (0.7, max(1, G.num_ws // 2))]


def _assert_same_function(loaded, ref, run=True):
    """Same structure, bit-identical tensors and (run=True) bit-identical outputs: w for several
    truncations, and images (const noise, psi 0.7 with a cutoff)."""
    assert effective_structure(loaded) == effective_structure(ref)
    own, theirs = loaded.state_dict(), ref.state_dict()
    assert list(own) == list(theirs)
    for name in own:
        assert torch.equal(own[name], theirs[name]), name
    if not run:
        return
    truncations = _truncations(ref)
    for psi, cutoff in truncations:
        assert torch.equal(_ws(loaded, psi, cutoff), _ws(ref, psi, cutoff))
    psi, cutoff = truncations[-1]  # psi 0.7 with a cutoff, when the model can truncate
    z, c = _inputs(ref)
    with torch.no_grad():
        img = loaded(z, c, truncation_psi=psi, truncation_cutoff=cutoff, noise_mode="const")
        assert torch.equal(img, ref(z, c, truncation_psi=psi, truncation_cutoff=cutoff, noise_mode="const"))
    assert img.dtype == torch.float32 and torch.isfinite(img).all()


def test_cases_cover_every_pair_and_stay_few():
    names = list(FACTORS)
    for a, b in itertools.combinations(names, 2):
        seen = {(case[a], case[b]) for case in CASES}
        assert seen == set(itertools.product(FACTORS[a], FACTORS[b])), (a, b)
    assert len(CASES) <= 20


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_round_trip_matches_bit_for_bit(case, tmp_path):
    G_ema = _build(case, seed=1)
    G_train = _build(case, seed=2)
    path = write_network_pickle(tmp_path / "net.pkl", G_ema, G_train, fmt=case["fmt"])
    ref, other = (G_ema, G_train) if case["key"] == "G_ema" else (G_train, G_ema)

    loaded = load_generator(path, pickle_key=case["key"], use_cache=False)
    direct = load_network_pickle(path, key=case["key"])
    for G in (loaded, direct):
        assert not G.training
        assert not any(p.requires_grad for p in G.parameters())
    _assert_same_function(loaded, ref)
    _assert_same_function(direct, ref, run=False)  # same class, structure and tensors: same function
    assert not torch.equal(_ws(loaded, 1.0), _ws(other, 1.0))  # the right network was picked

    # Config fields: what the file said, in the form our constructor takes.
    cfg = loaded.init_kwargs
    assert (cfg["z_dim"], cfg["c_dim"], cfg["w_dim"], cfg["img_resolution"], cfg["img_channels"]) == (16, case["c_dim"], 16, case["resolution"], 3)
    assert (cfg["channel_base"], cfg["channel_max"]) == (256, 16)
    assert cfg["architecture"] == case["architecture"]
    assert cfg["conv_clamp"] == case["conv_clamp"]
    mapping = cfg["mapping_kwargs"]
    want = {"num_layers": 8, "lr_multiplier": 0.01, "w_avg_beta": 0.998, **MAPPINGS[case["mapping"]]}
    for key, value in want.items():
        assert mapping[key] == value, key
    # fp16 flags come back per block (the model still runs in fp32 on the CPU).
    fp16 = {b.resolution: b.use_fp16 for b in loaded.synthesis.blocks()}
    assert fp16 == {b.resolution: b.use_fp16 for b in ref.synthesis.blocks()}
    assert any(fp16.values()) == (case["num_fp16_res"] > 0)


def test_fp16_threshold_reaching_8_keeps_the_requested_count(tmp_path):
    # At 16 px, 2 and 4 fp16 resolutions both mean blocks 8 and 16; the recorded count survives.
    for fmt in ("stylegan3", "ada"):
        G = tiny_generator(3, img_resolution=16, num_fp16_res=4)
        loaded = load_generator(write_network_pickle(tmp_path / f"{fmt}.pkl", G, fmt=fmt), use_cache=False)
        assert loaded.init_kwargs["num_fp16_res"] == 4
        assert [b.use_fp16 for b in loaded.synthesis.blocks()] == [False, True, True]


def test_layer_options_and_fused_modconv_default_survive(tmp_path):
    G = tiny_generator(4, img_resolution=8, fused_modconv_default="inference_only", use_noise=False, architecture="orig")
    loaded = load_generator(write_network_pickle(tmp_path / "net.pkl", G), use_cache=False)
    assert loaded.init_kwargs["fused_modconv_default"] == "inference_only"
    assert all(b.fused_modconv_default == "inference_only" for b in loaded.synthesis.blocks())
    assert not loaded.synthesis.b8.conv0.use_noise
    _assert_same_function(loaded, G)


@pytest.mark.parametrize("variant", ["sg3-easydict-kwargs", "sg3-protocol5", "ada-no-augment-pipe"])
def test_format_variants(variant, tmp_path):
    G = tiny_generator(5, img_resolution=8, c_dim=3)
    if variant == "sg3-easydict-kwargs":
        path = write_network_pickle(tmp_path / "net.pkl", G, easydict=True)
    elif variant == "sg3-protocol5":
        path = write_network_pickle(tmp_path / "net.pkl", G, protocol=5)
    else:
        path = write_network_pickle(tmp_path / "net.pkl", G, fmt="ada", augment_pipe=False)
    _assert_same_function(load_generator(path, use_cache=False), G)


def test_written_file_has_nvidias_layout(tmp_path):
    G = tiny_generator(6, img_resolution=8, c_dim=2)
    for fmt, protocol in (("stylegan3", 4), ("ada", 3)):
        data = pickle_bytes(snapshot(G, fmt=fmt), fmt)
        assert data[:2] == bytes([0x80, protocol])
        assert b"torch_utils.persistence" in data and b"_reconstruct_persistent_obj" in data
        assert b"_load_from_bytes" in data and b"numpy._core.multiarray" in data
        path = tmp_path / f"{fmt}.pkl"
        path.write_bytes(data)
        top = read_network_pickle(path)
        assert list(top) == ["G", "D", "G_ema", "augment_pipe", "training_set_kwargs"]
        assert [top[k].class_name for k in ("G", "D", "G_ema", "augment_pipe")] == ["Generator", "Discriminator", "Generator", "AugmentPipe"]
        assert isinstance(top["training_set_kwargs"], dict) and top["training_set_kwargs"]["use_labels"] is True
        ema = top["G_ema"]
        assert all(r.version == 6 and r.module_src_chars > 0 for _, r in iter_records(ema))
        fc0 = ema.child("mapping").child("fc0").state
        assert isinstance(fc0["weight_gain"], np.float64) and fc0["bias_gain"] == 0.01
        layer = ema.child("synthesis").child("b8").child("conv0").state
        assert isinstance(layer["act_gain"], np.float64)
        assert type(layer["_parameters"]["weight"]) is torch.nn.Parameter and not layer["_parameters"]["weight"].requires_grad
        kwargs = ema.state["_init_kwargs"]
        if fmt == "ada":
            assert set(kwargs) == {"z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs", "synthesis_kwargs"}
            assert type(kwargs["synthesis_kwargs"]).__name__ == "EasyDictRecord"
            assert "fused_modconv_default" not in ema.child("synthesis").child("b4").state
        else:
            assert "synthesis_kwargs" not in kwargs and kwargs["channel_base"] == 256
            assert ema.child("synthesis").child("b4").state["fused_modconv_default"] is True


@pytest.mark.skipif(not (SHARED_STYLEGAN2 / "sg3-skip32.pkl").is_file(), reason="needs ../shared/fixtures/stylegan2 (not in a fresh clone)")
def test_writer_matches_the_real_fixture_structure(tmp_path):
    """Per class, the state keys (in order) the writer produces equal those in NVIDIA's own file,
    and so do the constructor arguments of every generator record."""
    real = read_network_pickle(SHARED_STYLEGAN2 / "sg3-skip32.pkl")
    G = tiny_generator(0, z_dim=64, w_dim=64, img_resolution=32, channel_base=1024, channel_max=64, num_fp16_res=2, conv_clamp=256,
                       architecture="skip", mapping_kwargs=dict(num_layers=8))
    mine = read_network_pickle(write_network_pickle(tmp_path / "mine.pkl", G))
    assert list(mine) == list(real)
    for key in ("G", "G_ema", "D", "augment_pipe"):
        assert attribute_keys(mine[key]) == attribute_keys(real[key]), key
    for (path_a, a), (path_b, b) in zip(iter_records(mine["G_ema"]), iter_records(real["G_ema"]), strict=True):
        assert (path_a, a.class_name) == (path_b, b.class_name)
        assert a.state["_init_args"] == b.state["_init_args"], path_a
        assert dict(a.state["_init_kwargs"]) == dict(b.state["_init_kwargs"]), path_a
        for name, value in b.state.items():
            if name.startswith("_") or name == "training":
                continue
            assert type(a.state[name]) is type(value) and a.state[name] == value, f"{path_a}.{name}"
        for kind in ("_parameters", "_buffers"):
            assert {k: (type(v), tuple(v.shape), v.dtype) for k, v in a.state[kind].items()} == \
                   {k: (type(v), tuple(v.shape), v.dtype) for k, v in b.state[kind].items()}, path_a



def test_ada_default_conv_clamp_comes_from_the_layers(tmp_path):
    G = tiny_generator(7, img_resolution=8, conv_clamp=None)
    path = write_network_pickle(tmp_path / "net.pkl", G, fmt="ada", drop_kwargs=("conv_clamp",))
    assert "conv_clamp" not in read_network_pickle(path)["G_ema"].state["_init_kwargs"]["synthesis_kwargs"]
    assert load_generator(path, use_cache=False).synthesis.b8.conv1.conv_clamp is None


# --------------------------------------------------------------------------------------------
# Safety: nothing in a file runs.


class _Reduce:
    """Pickles as `func(*args)`: what a hostile file would contain."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def _hostile(kind: str, marker: Path):
    if kind == "os.system":
        return _Reduce(os.system, f"touch {marker}")
    if kind == "builtins.eval":
        return _Reduce(eval, f"open({str(marker)!r}, 'w').close()")
    if kind == "builtins.exec":
        return _Reduce(exec, f"open({str(marker)!r}, 'w').close()")
    if kind == "subprocess.Popen":
        return _Reduce(subprocess.Popen, ["touch", str(marker)])
    if kind == "getattr-chain":
        return _Reduce(getattr, collections.OrderedDict, "fromkeys")
    raise ValueError(kind)


def _expect_corrupt(path, *needles, use_cache=False):
    with pytest.raises(CorruptFileError) as info:
        load_generator(path, use_cache=use_cache)
    message = str(info.value)
    assert info.value.exit_code == 4
    assert "\n" not in message and message
    for needle in needles:
        assert needle in message, message
    return message


@pytest.mark.parametrize("kind", ["os.system", "builtins.eval", "builtins.exec", "subprocess.Popen", "getattr-chain"])
@pytest.mark.parametrize("where", ["top-level", "inside-a-record"])
def test_forbidden_global_is_refused_and_never_runs(kind, where, tmp_path):
    marker = tmp_path / "PWNED"
    G = tiny_generator(8, img_resolution=8)
    if where == "top-level":
        top = snapshot(G)
        top = {"evil": _hostile(kind, marker), **top}
    else:
        record = generator_record(G)
        record.sub("synthesis.b8").state["architecture"] = _hostile(kind, marker)
        top = snapshot(record)
    path = dump_pickle(top, tmp_path / "net.pkl")
    message = _expect_corrupt(path, "refusing to load global", use_cache=True)
    assert kind.split(".")[-1].split("-")[0] in message
    assert not marker.exists()
    assert not list((tmp_path / "gencbm-home").rglob("*.safetensors"))


def test_hostile_payload_inside_a_storage_is_refused(tmp_path):
    """Storages are nested legacy torch.save archives: read with weights_only, so code in them never runs."""
    import torch.storage

    marker = tmp_path / "PWNED"
    # A legacy torch.save archive: magic number, protocol version, then the hostile "sys info".
    inner = b"".join(pickle.dumps(x, protocol=2) for x in (0x1950A86A20F9469CFC6C, 1001, _hostile("os.system", marker)))
    G = tiny_generator(9, img_resolution=8)
    record = generator_record(G)
    record.sub("mapping").state["_buffers"]["w_avg"] = _Reduce(torch.storage._load_from_bytes, inner)
    path = dump_pickle(snapshot(record), tmp_path / "net.pkl")
    _expect_corrupt(path, "storage")
    assert not marker.exists()


def test_embedded_module_source_is_never_executed(tmp_path):
    marker = tmp_path / "PWNED"
    G = tiny_generator(10, img_resolution=8)
    top = snapshot(G)
    for key in ("G", "G_ema", "D", "augment_pipe"):
        for _, r in iter_records(top[key]):
            r.module_src = f"open({str(marker)!r}, 'w').close()\n"
    path = dump_pickle(top, tmp_path / "net.pkl")
    _assert_same_function(load_generator(path, use_cache=False), G)
    assert not marker.exists()


def test_persistent_ids_are_refused(tmp_path):
    class PidPickler(pickle.Pickler):
        def persistent_id(self, obj):
            return "pid" if isinstance(obj, torch.Tensor) else None

    import io

    buf = io.BytesIO()
    PidPickler(buf, protocol=4).dump({"G_ema": torch.zeros(2)})
    path = tmp_path / "net.pkl"
    path.write_bytes(buf.getvalue())
    _expect_corrupt(path, "persistent id")


# --------------------------------------------------------------------------------------------
# Damaged and foreign files.


@pytest.fixture(scope="module")
def good_bytes():
    return pickle_bytes(snapshot(tiny_generator(12, img_resolution=8)))


@pytest.mark.parametrize("fraction", [0.0001, 0.01, 0.3, 0.5, 0.9, 0.999])
def test_truncated_file(fraction, good_bytes, tmp_path):
    path = tmp_path / "net.pkl"
    path.write_bytes(good_bytes[: max(1, int(len(good_bytes) * fraction))])
    _expect_corrupt(path, str(path), use_cache=True)
    assert not list((tmp_path / "gencbm-home").rglob("*.safetensors"))


def test_file_without_its_last_byte(good_bytes, tmp_path):
    path = tmp_path / "net.pkl"
    path.write_bytes(good_bytes[:-1])
    _expect_corrupt(path, "not a readable network pickle")


@pytest.mark.parametrize("seed", range(8))
def test_random_bytes(seed, tmp_path):
    rng = np.random.default_rng(seed)
    head = [b"", b"\x80\x04", b"\x80\x03", b"\x80\x02\x95"][seed % 4]
    path = tmp_path / "net.pkl"
    path.write_bytes(head + rng.bytes(int(rng.integers(1, 4000))))
    _expect_corrupt(path)



def test_tensor_view_beyond_its_storage_is_refused(tmp_path):
    G = tiny_generator(11, img_resolution=8)
    record = generator_record(G)
    small = torch.zeros(4).untyped_storage()
    bad = _Reduce(torch._utils._rebuild_tensor_v2, torch.storage.TypedStorage(wrap_storage=small, dtype=torch.float32, _internal=True),
                  0, (16,), (1,), False, collections.OrderedDict())
    record.sub("mapping").state["_buffers"]["w_avg"] = bad
    path = dump_pickle(snapshot(record), tmp_path / "net.pkl")
    _expect_corrupt(path)


@pytest.mark.parametrize("payload", [
    b"\x80\x04\x95\xff\xff\xff\xff\xff\xff\xff\x7f",  # a FRAME longer than any file (OverflowError in pickle)
    b"\x80\x04\x8d\xff\xff\xff\xff\xff\xff\xff\x7f",  # BINUNICODE8 of an impossible length
])
def test_impossible_lengths(payload, tmp_path):
    path = tmp_path / "net.pkl"
    path.write_bytes(payload)
    _expect_corrupt(path, "not a readable network pickle")


def test_empty_file(tmp_path):
    path = tmp_path / "net.pkl"
    path.write_bytes(b"")
    _expect_corrupt(path, "not a readable network pickle")


def test_pickle_of_a_list(tmp_path):
    path = tmp_path / "net.pkl"
    path.write_bytes(pickle.dumps([1, 2, 3]))
    _expect_corrupt(path, "expected a dict", "list")


def test_dict_without_g_ema_lists_its_keys(tmp_path):
    top = snapshot(tiny_generator(13, img_resolution=8))
    del top["G_ema"]
    path = dump_pickle(top, tmp_path / "net.pkl")
    _expect_corrupt(path, "'G_ema'", "keys: D, G, augment_pipe, training_set_kwargs")
    # ... while the training network is still there for whoever asks for it.
    assert load_generator(path, pickle_key="G", use_cache=False).img_resolution == 8


def test_non_network_under_g_ema(tmp_path):
    top = snapshot(tiny_generator(14, img_resolution=8))
    top["G_ema"] = {"weights": torch.zeros(3)}
    _expect_corrupt(dump_pickle(top, tmp_path / "net.pkl"), "'G_ema' is not a persistent network object")


def test_non_generator_record_under_g_ema(tmp_path):
    top = snapshot(tiny_generator(15, img_resolution=8))
    top["G_ema"] = top["D"]
    _expect_corrupt(dump_pickle(top, tmp_path / "net.pkl"), "expected a StyleGAN2 Generator", "Discriminator")


def _damaged(tmp_path, damage) -> Path:
    record = generator_record(tiny_generator(16, img_resolution=8))
    damage(record)
    return dump_pickle(snapshot(record), tmp_path / "net.pkl")


def test_tensor_of_the_wrong_shape(tmp_path):
    def damage(r):
        r.sub("synthesis.b8.conv0").state["_parameters"]["weight"] = torch.nn.Parameter(torch.zeros(16, 16, 3, 2), requires_grad=False)
    _expect_corrupt(_damaged(tmp_path, damage), "synthesis.b8.conv0.weight", "(16, 16, 3, 2)", "(16, 16, 3, 3)")


def test_missing_tensor(tmp_path):
    def damage(r):
        del r.sub("synthesis.b8.conv1").state["_buffers"]["noise_const"]
    _expect_corrupt(_damaged(tmp_path, damage), "missing 1 tensor", "synthesis.b8.conv1.noise_const")


def test_extra_tensor(tmp_path):
    def damage(r):
        r.sub("mapping.fc0").state["_buffers"]["magnitude_ema"] = torch.ones([])
    _expect_corrupt(_damaged(tmp_path, damage), "not used", "mapping.fc0.magnitude_ema")


def test_non_float_tensor(tmp_path):
    def damage(r):
        r.sub("mapping.fc0").state["_parameters"]["bias"] = torch.zeros(16, dtype=torch.int64)
    _expect_corrupt(_damaged(tmp_path, damage), "mapping.fc0.bias", "int64")


def test_unknown_constructor_kwarg(tmp_path):
    path = write_network_pickle(tmp_path / "net.pkl", tiny_generator(17, img_resolution=8), extra_kwargs={"magnitude_ema_beta": 0.999})
    _expect_corrupt(path, "magnitude_ema_beta")


def test_unknown_mapping_kwarg_in_ada_file(tmp_path):
    G = tiny_generator(17, img_resolution=8, mapping_kwargs={"num_layers": 2})
    record = generator_record(G, "ada")
    record.state["_init_kwargs"]["mapping_kwargs"]["freeze_layers"] = 2
    _expect_corrupt(dump_pickle(snapshot(record, fmt="ada"), tmp_path / "net.pkl", "ada"), "freeze_layers")


def test_missing_submodule(tmp_path):
    def damage(r):
        del r.sub("synthesis").state["_modules"]["b8"]
    _expect_corrupt(_damaged(tmp_path, damage), "b8")


MALFORMED = {
    "init-kwargs-not-a-dict": lambda r: r.state.__setitem__("_init_kwargs", 5),
    "resolution-not-a-number": lambda r: r.state["_init_kwargs"].__setitem__("img_resolution", "x"),
    "resolution-zero": lambda r: r.state["_init_kwargs"].__setitem__("img_resolution", 0),
    "bias-gain-not-a-number": lambda r: r.sub("mapping.fc0").state.__setitem__("bias_gain", "x"),
    "parameters-not-a-dict": lambda r: r.sub("mapping.fc0").state.__setitem__("_parameters", [1]),
    "absurd-width": lambda r: r.state["_init_kwargs"].__setitem__("w_dim", 10**15),  # petabytes: fails to allocate anywhere
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_record_fields(name, tmp_path):
    _expect_corrupt(_damaged(tmp_path, MALFORMED[name]))


def test_missing_file_is_not_corrupt(tmp_path):
    from engine.errors import ArtifactMissingError

    with pytest.raises(ArtifactMissingError):
        load_generator(tmp_path / "nope.pkl")


# --------------------------------------------------------------------------------------------
# The store's safetensors conversions.


def _conversions(home: Path) -> list[Path]:
    return sorted((home / "converted").glob("*.safetensors"))


class _Counting:
    """Wraps RestrictedUnpickler to count how often a pickle is actually read."""

    def __init__(self, monkeypatch):
        self.count = 0
        real = nvidia_pickle.RestrictedUnpickler
        outer = self

        class Counting(real):
            def load(self):
                outer.count += 1
                return super().load()

        monkeypatch.setattr(nvidia_pickle, "RestrictedUnpickler", Counting)


@pytest.fixture
def pickled(tmp_path):
    G = tiny_generator(20, img_resolution=8, c_dim=2, num_fp16_res=2)
    return G, write_network_pickle(tmp_path / "net.pkl", G)


def test_first_load_writes_one_conversion(pickled, _store, monkeypatch):
    G, path = pickled
    counter = _Counting(monkeypatch)
    first = load_generator(path)
    assert counter.count == 1
    files = _conversions(_store)
    assert len(files) == 1 and files[0].name.startswith("net-G_ema-")
    assert [p for p in (_store / "converted").iterdir() if p not in files] == []  # no temporary files left
    _assert_same_function(first, G)
    # G and G_ema convert separately.
    load_generator(path, pickle_key="G")
    assert len(_conversions(_store)) == 2


def test_second_load_does_not_unpickle(pickled, _store, monkeypatch):
    G, path = pickled
    first = load_generator(path)

    class Refuse:
        def __init__(self, *args, **kwargs):
            raise AssertionError("the pickle was read again")

    monkeypatch.setattr(nvidia_pickle, "RestrictedUnpickler", Refuse)
    again = load_generator(path)
    _assert_same_function(again, G)
    assert again.init_kwargs == first.init_kwargs
    assert len(_conversions(_store)) == 1


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "foreign-safetensors"])
def test_damaged_conversion_is_rebuilt(damage, pickled, _store, monkeypatch):
    G, path = pickled
    load_generator(path)
    (conv,) = _conversions(_store)
    data = conv.read_bytes()
    if damage == "garbage":
        conv.write_bytes(b"\x00" * 64 + data[64:])
    elif damage == "truncated":
        conv.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        conv.write_bytes(b"")
    else:
        from safetensors.torch import save_file

        save_file({"x": torch.zeros(2)}, str(conv), metadata={"gencbm": '{"kind": "something-else"}'})
    counter = _Counting(monkeypatch)
    again = load_generator(path)
    assert counter.count == 1
    _assert_same_function(again, G)
    (rebuilt,) = _conversions(_store)
    assert rebuilt == conv and rebuilt.read_bytes() == data



def test_conversion_with_flipped_tensor_bytes_is_detected(pickled, _store):
    G, path = pickled
    load_generator(path)
    (conv,) = _conversions(_store)
    data = bytearray(conv.read_bytes())
    data[-100] ^= 0x40  # inside the last tensor's data, after the JSON header
    conv.write_bytes(bytes(data))
    _assert_same_function(load_generator(path), G)


def test_changed_pickle_invalidates_the_conversion(pickled, _store, monkeypatch):
    G, path = pickled
    load_generator(path)
    (old,) = _conversions(_store)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # touched: same bytes, new mtime
    counter = _Counting(monkeypatch)
    load_generator(path)
    assert counter.count == 1
    assert set(_conversions(_store)) - {old}  # a new conversion (the old one is merely stale)
    # Replaced by another network: the new one is what loads.
    G2 = tiny_generator(21, img_resolution=8, c_dim=2, num_fp16_res=2)
    write_network_pickle(path, G2)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    _assert_same_function(load_generator(path), G2)
    assert counter.count == 2


def test_no_conversion_without_cache(pickled, _store):
    _, path = pickled
    load_generator(path, use_cache=False)
    assert _conversions(_store) == []
