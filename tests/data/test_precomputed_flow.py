"""Precomputed flow images as a source of the flow DataModule, on generated images in the layouts
the MEGC2019 baselines' authors distribute (tests/flow_baselines.py writes them; never real data):
the computed path's sample ids and folds, both layouts, channels in any order, the regions, and
every file missing, extra or of another size named."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from moext.data.flow.datamodule import FlowDataModule
from moext.data.flow.precomputed import PrecomputedFlow
from moext.data.flow.regions import cut_regions, fallback_points
from moext.data.records import DatasetError
from tests.data import fixtures as fx
from tests.flow_baselines import (
    HTNET_FOLDER,
    HTNET_LIST,
    HTNET_PATTERN,
    STSTNET_FOLDER,
    STSTNET_PATTERN,
    official_rows,
    write_precomputed_flow,
)


def precomputed_dm(root: Path, source: PrecomputedFlow, **options) -> FlowDataModule:
    options = {
        "channels": ["u", "v", "strain"],
        "flow_size": 28,
        "flow_scaling": "minmax",
    } | options
    return FlowDataModule(
        task="classify",
        protocol="cde3",
        root=str(root),
        flow_source="precomputed",
        precomputed=source,
        batch_size=4,
        **options,
    )


HTNET = PrecomputedFlow(HTNET_FOLDER, HTNET_PATTERN, samples=HTNET_LIST)


@pytest.fixture(scope="module")
def htnet_root(tmp_path_factory) -> Path:
    """HTNet's layout with the first 4 clips of each database (12 samples, 4 subjects)."""
    root = tmp_path_factory.mktemp("htnet")
    write_precomputed_flow(root, official_rows(per_dataset=4), "htnet")
    return root


def test_samples_ids_labels_and_folds_are_the_computed_path_s(tmp_path):
    """The 442 samples of the package's list (and of the authors' CSV) are named, labelled and
    folded as the readers name the same clips of the databases (so `moext compare` can pair a
    precomputed run with a computed one)."""
    computed = FlowDataModule(
        task="classify", protocol="cde3", root=str(fx.write_megc2019(tmp_path))
    )
    write_precomputed_flow(tmp_path, official_rows(), "htnet")
    table = lambda dm: sorted(map(str, dm.sample_table()))  # noqa: E731
    for source in (HTNET, PrecomputedFlow(HTNET_FOLDER, HTNET_PATTERN)):
        dm = precomputed_dm(tmp_path, source)
        assert dm.subjects() == computed.subjects() and len(dm.subjects()) == 68
        assert table(dm) == table(computed) and len(dm.samples) == 442
        assert {"smic/s1/s1_ne_01", "samm/006/006_1_2", "casme2/sub01/EP02_01f"} <= {
            s.id for s in dm.samples
        }


def test_the_htnet_layout_is_served_in_the_channel_order_asked(htnet_root):
    dm = precomputed_dm(htnet_root, HTNET, channels=["strain", "v", "u"], fold="samm/006")
    report = dm.prepare_data()
    assert "12 images checked" in report.summary()
    dm.setup("fit")
    assert dm.subjects() == ["casme2/sub01", "casme2/sub02", "samm/006", "smic/s1"]
    batch = next(iter(dm.test_dataloader()))
    served = dm.on_after_batch_transfer(batch, 0)["flow"]
    ids = [dm.samples[i].id for i in batch["index"].tolist()]
    assert ids[0].startswith("samm/006/") and served.shape == (len(ids), 3, 28, 28)
    _, subject, clip = ids[0].split("/")
    rgb = cv2.imread(str(htnet_root / HTNET_FOLDER / f"{subject}_{clip} .png"))[..., ::-1]
    want = torch.from_numpy(rgb[..., ::-1].copy()).permute(2, 0, 1).float() / 255  # strain, v, u
    torch.testing.assert_close(served[0], want)
    assert dm.input_size == 28 and dm.num_channels == 3


def test_the_ststnet_layout_reads_labels_from_its_folders(tmp_path):
    rows = official_rows(per_dataset=2)
    write_precomputed_flow(tmp_path, rows, "ststnet")
    listed = tmp_path / "list.csv"  # the package's format: no header
    listed.write_text("".join(f"{d},{s},{c},{label}\n" for d, s, c, label in rows))
    source = PrecomputedFlow(STSTNET_FOLDER, STSTNET_PATTERN, samples=str(listed))
    dm = precomputed_dm(tmp_path, source, channels=["u", "v"], fold="smic/s1")
    dm.prepare_data()  # the u_train copies are not samples' files: not "extra"
    dm.setup("fit")
    assert len(dm.samples) == 6 and dm.num_channels == 2
    batch = next(iter(dm.train_dataloader()))
    assert batch["flow"].dtype == torch.float32 and batch["flow"].shape[1:] == (2, 28, 28)


def test_a_subset_of_the_databases_reads_its_files_only(htnet_root):
    dm = precomputed_dm(htnet_root, HTNET, datasets=["casme2"], fold="casme2/sub02")
    dm.prepare_data()  # the other databases' files are the list's: not extra
    dm.setup("fit")
    assert dm.subjects() == ["casme2/sub01", "casme2/sub02"] and len(dm.samples) == 4


def test_regions_are_cut_at_htnet_s_fallback_points(htnet_root):
    dm = precomputed_dm(htnet_root, HTNET, regions="htnet_code", fold="casme2/sub01")
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.test_dataloader()))
    served = dm.on_after_batch_transfer(batch, 0)["flow"]
    files = [
        cv2.imread(str(htnet_root / HTNET_FOLDER / f"sub01_{s.clip} .png"))[..., ::-1]
        for s in (dm.samples[i] for i in batch["index"].tolist())
    ]
    whole = torch.from_numpy(np.stack(files).copy()).permute(0, 3, 1, 2).float() / 255
    torch.testing.assert_close(
        served, cut_regions(whole, fallback_points(len(whole), 28), "htnet_code")
    )
    assert not torch.equal(served, whole)


def test_missing_extra_and_wrongly_sized_files_are_named(tmp_path):
    write_precomputed_flow(tmp_path, official_rows(per_dataset=2), "htnet")
    folder = tmp_path / HTNET_FOLDER
    (folder / "sub01_EP02_01f .png").unlink()
    cv2.imwrite(str(folder / "s01_s01_ne_02 .png"), np.zeros((32, 32, 3), np.uint8))
    cv2.imwrite(str(folder / "sub99_EP01_01 .png"), np.zeros((28, 28, 3), np.uint8))
    (folder / "006_006_1_3 .png").write_bytes(b"not a png")
    with pytest.raises(DatasetError) as raised:
        precomputed_dm(tmp_path, HTNET).prepare_data()
    message = str(raised.value)
    assert "4 problem(s)" in message
    assert "casme2/sub01/EP02_01f: missing" in message and "sub01_EP02_01f .png" in message
    assert "smic/s1/s1_ne_02:" in message and "is 32x32, expected 28x28" in message
    assert "not a listed sample:" in message and "sub99_EP01_01 .png" in message
    assert "samm/006/006_1_3: cannot decode image" in message


def test_list_rows_off_the_megc2019_list_or_relabelled_are_named(tmp_path):
    write_precomputed_flow(tmp_path, official_rows(per_dataset=1), "htnet")
    listed = tmp_path / HTNET_LIST
    lines = listed.read_text().splitlines()
    lines[1] = lines[1].replace(",1,", ",2,")  # casme2 sub01 EP02_01f is positive (1)
    lines += [lines[2], "casme2,sub01,EP99_99,0,,x.jpg,", "samm,006,006_1_3,x,,y.jpg,"]
    listed.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError) as raised:
        precomputed_dm(tmp_path, HTNET).prepare_data()
    message = str(raised.value)
    assert f"{HTNET_LIST}: 4 row(s) cannot be used" in message
    assert "row 2: label 2, megc2019_combined_3class_gt.csv says 1" in message
    assert f"row 5: {lines[2].split(',')[0]}/" in message and "is listed twice" in message
    assert "row 6: casme2/sub01/EP99_99 is not on" in message
    assert "row 7: label 'x' is not 0, 1 or 2" in message


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"channels": ["u", "magnitude"]}, r"hold \['u', 'v', 'strain'\].*not \['magnitude'\]"),
        ({"flow_size": None}, "a flow_size"),
        ({"augment": "device"}, "augment must be none"),
        ({"flow_scaling": "max"}, "flow_scaling must be minmax"),
    ],
)
def test_bad_precomputed_settings_raise(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        precomputed_dm(tmp_path, HTNET, **options)
    with pytest.raises(ValueError, match="must name {clip}"):
        PrecomputedFlow("x", "{subject}.png")
    with pytest.raises(ValueError, match="protocol must be cde3"):
        FlowDataModule(
            protocol="synth-3", datasets=["synth"], flow_source="precomputed",
            precomputed=HTNET, flow_size=28, flow_scaling="minmax",
        )  # fmt: skip


def test_greyscale_rgba_and_16_bit_files_are_named(tmp_path):
    """Read as colour, a greyscale file would be served as u = v = strain, an RGBA one without
    its alpha and a 16-bit one divided by 256: each is named instead."""
    write_precomputed_flow(tmp_path, official_rows(per_dataset=2), "htnet")
    folder = tmp_path / HTNET_FOLDER
    cv2.imwrite(str(folder / "sub01_EP02_01f .png"), np.full((28, 28), 9, np.uint8))
    cv2.imwrite(str(folder / "s01_s01_ne_01 .png"), np.full((28, 28, 4), 9, np.uint8))
    cv2.imwrite(str(folder / "006_006_1_2 .png"), np.full((28, 28, 3), 900, np.uint16))
    with pytest.raises(DatasetError) as raised:
        precomputed_dm(tmp_path, HTNET).prepare_data()
    message = str(raised.value)
    assert "3 problem(s)" in message
    for sample, file, stored in [
        ("casme2/sub01/EP02_01f", "sub01_EP02_01f .png", "1 channel(s) of 8 bits"),
        ("smic/s1/s1_ne_01", "s01_s01_ne_01 .png", "4 channel(s) of 8 bits"),
        ("samm/006/006_1_2", "006_006_1_2 .png", "3 channel(s) of 16 bits"),
    ]:
        assert f"{sample}: {folder / file} holds {stored}, expected 3 of 8 (RGB)" in message


def test_a_samples_list_of_its_header_only_is_refused_naming_it(tmp_path):
    """Not "0 samples" and every image "not a listed sample"."""
    write_precomputed_flow(tmp_path, official_rows(per_dataset=1), "htnet")
    listed = tmp_path / HTNET_LIST
    listed.write_text(listed.read_text().splitlines()[0] + "\n")
    with pytest.raises(DatasetError, match=f"^{listed}: the samples list holds its header only"):
        precomputed_dm(tmp_path, HTNET).prepare_data()


def test_a_samples_list_separated_by_semicolons_is_refused_saying_so(tmp_path):
    write_precomputed_flow(tmp_path, official_rows(per_dataset=1), "htnet")
    listed = tmp_path / HTNET_LIST
    listed.write_text(listed.read_text().replace(",", ";"))
    with pytest.raises(DatasetError, match=f"^{listed}: its columns are separated by ';'"):
        precomputed_dm(tmp_path, HTNET).prepare_data()
