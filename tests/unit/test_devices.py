"""Tier 1: Edge TPU discovery from a fake sysfs tree."""

from edge_agent.inference.devices import apex_temperatures, list_edge_tpus


def make_usb(root, name, vendor, product):
    d = root / "bus/usb/devices" / name
    d.mkdir(parents=True)
    (d / "idVendor").write_text(vendor + "\n")
    (d / "idProduct").write_text(product + "\n")


def test_lists_pci_and_both_usb_ids(tmp_path):
    make_usb(tmp_path, "2-1", "1a6e", "089a")  # before firmware load
    make_usb(tmp_path, "2-2", "18d1", "9302")  # after
    make_usb(tmp_path, "2-3", "046d", "0825")  # a webcam
    apex = tmp_path / "class/apex/apex_0"
    apex.mkdir(parents=True)
    (apex / "temp").write_text("47250\n")
    devices = list_edge_tpus(str(tmp_path))
    assert [d.type for d in devices] == ["pci", "usb", "usb"]
    assert devices[1].path.endswith("2-1") and devices[2].path.endswith("2-2")
    assert apex_temperatures(str(tmp_path)) == {"apex_0": 47.25}


def test_nothing_found(tmp_path):
    assert list_edge_tpus(str(tmp_path)) == []
    assert apex_temperatures(str(tmp_path)) == {}
