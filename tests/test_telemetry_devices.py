"""Visible-device mapping: HIP/ROCR/CUDA_VISIBLE_DEVICES to vendor devices by PCI bus id or UUID."""

from ftcompare.telemetry import devices
from ftcompare.telemetry.devices import KfdNode, TorchDevice, VendorDevice


def amd(index, bus, serial, name="AMD Instinct MI250X"):
    return VendorDevice(
        index=index,
        name=name,
        pci_bus_id=f"0000:{bus}:00.0",
        uuid=f"uuid-{index}",
        unique_id=devices.amd_unique_id(serial),
    )


def nvidia(index, bus, uuid):
    return VendorDevice(index=index, name="NVIDIA H200", pci_bus_id=f"0000:{bus}:00.0", uuid=uuid)


def write_kfd(root, nodes):
    """nodes: [(gpu_id, bus, unique_id)] in KFD node order; gpu_id 0 is a CPU node."""
    for i, (gpu_id, bus, unique_id) in enumerate(nodes):
        node = root / str(i)
        node.mkdir(parents=True)
        (node / "gpu_id").write_text(f"{gpu_id}\n")
        location = (bus << 8) if gpu_id else 0
        (node / "properties").write_text(
            f"cpu_cores_count 0\nsimd_count {0 if not gpu_id else 440}\n"
            f"location_id {location}\ndomain 0\nunique_id {unique_id}\n"
        )


def test_pci_bus_ids_in_every_vendor_spelling_compare_equal():
    assert devices.normalise_pci_bus_id("00000000:17:00.0") == "0000:17:00.0"  # NVML busId
    assert devices.normalise_pci_bus_id("0000:C1:00.0") == "0000:c1:00.0"  # amdsmi bdf
    assert devices.normalise_pci_bus_id("17:00.0") == "0000:17:00.0"
    assert devices.normalise_pci_bus_id("not a bus id") is None
    assert devices.pci_slot(devices.pci_bus_id_from_parts(0, 0xC1, 0)) == "0000:c1:00"


def test_amd_unique_ids_from_hip_uuid_asic_serial_kfd_and_torch_agree():
    serial = "0x4B2F6A8E12345678"
    expected = "4b2f6a8e12345678"
    assert devices.amd_unique_id(serial) == expected
    assert devices.amd_unique_id("GPU-4b2f6a8e12345678") == expected
    assert devices.amd_unique_id(0x4B2F6A8E12345678) == expected
    # torch on ROCm prints the uuid bytes, which are the 16 ASCII characters of the unique id
    torch_uuid = expected.encode("ascii").hex()
    torch_uuid = "-".join([torch_uuid[:8], torch_uuid[8:12], torch_uuid[12:16], torch_uuid[16:20], torch_uuid[20:]])
    assert devices.unique_id_from_hip_uuid(torch_uuid) == expected
    assert devices.unique_id_from_hip_uuid("8e3c5a1b-2f4d-6e7a-9b0c-1d2e3f4a5b6c") is None


def test_visibility_lists_parse_like_the_runtimes():
    assert devices.parse_visible(None) is None
    assert devices.parse_visible("") == []
    assert devices.parse_visible(" 0, 2 ") == ["0", "2"]


def test_kfd_topology_gives_rocm_order_and_skips_cpu_nodes(tmp_path):
    write_kfd(tmp_path, [(0, 0, 0), (4242, 0x45, 0x1111), (5353, 0xC1, 0x2222)])
    assert devices.read_kfd_nodes(tmp_path) == [
        KfdNode("0000:45:00.0", "0000000000001111"),
        KfdNode("0000:c1:00.0", "0000000000002222"),
    ]
    assert devices.read_kfd_nodes(tmp_path / "missing") is None


def test_rocr_then_hip_visible_devices_pick_by_bus_id_not_amdsmi_position(tmp_path):
    # amdsmi enumerates c1, 0a, 45; ROCm (KFD) numbers them 45, c1, 0a.
    vendor = [amd(0, "c1", "0x1111"), amd(1, "0a", "0x2222"), amd(2, "45", "0x3333")]
    write_kfd(tmp_path, [(0, 0, 0), (1, 0x45, 0x3333), (2, 0xC1, 0x1111), (3, 0x0A, 0x2222)])
    kfd = devices.read_kfd_nodes(tmp_path)
    selection = devices.select_visible(
        "amdsmi", vendor, {"ROCR_VISIBLE_DEVICES": "2,0", "HIP_VISIBLE_DEVICES": "1"}, kfd_nodes=kfd
    )
    assert [(ordinal, d.pci_bus_id) for ordinal, d in selection.devices] == [(0, "0000:45:00.0")]
    assert "ROCR_VISIBLE_DEVICES='2,0'" in selection.how and "HIP_VISIBLE_DEVICES='1'" in selection.how
    assert selection.warnings == []


def test_rocr_visible_devices_by_uuid_and_cuda_visible_devices_when_hip_is_unset(tmp_path):
    vendor = [amd(0, "c1", "0x1111"), amd(1, "0a", "0x2222")]
    write_kfd(tmp_path, [(1, 0x0A, 0x2222), (2, 0xC1, 0x1111)])
    kfd = devices.read_kfd_nodes(tmp_path)
    by_uuid = devices.select_visible("amdsmi", vendor, {"ROCR_VISIBLE_DEVICES": "GPU-0000000000001111"}, kfd_nodes=kfd)
    assert [d.index for _, d in by_uuid.devices] == [0]
    by_cuda = devices.select_visible("amdsmi", vendor, {"CUDA_VISIBLE_DEVICES": "1"}, kfd_nodes=kfd)
    assert [d.pci_bus_id for _, d in by_cuda.devices] == ["0000:c1:00.0"]
    hip_wins = devices.select_visible(
        "amdsmi", vendor, {"CUDA_VISIBLE_DEVICES": "1", "HIP_VISIBLE_DEVICES": "0"}, kfd_nodes=kfd
    )
    assert [d.pci_bus_id for _, d in hip_wins.devices] == ["0000:0a:00.0"]


def test_hip_reads_an_empty_hip_visible_devices_as_unset_and_minus_one_as_no_device(tmp_path):
    """As HIP's runtime does: HIP_VISIBLE_DEVICES when not empty, else CUDA_VISIBLE_DEVICES; -1, how a job
    without a GPU is shown none (ftcompare.job_devices), ends the list without a warning."""
    vendor = [amd(0, "c1", "0x1111"), amd(1, "0a", "0x2222")]
    write_kfd(tmp_path, [(1, 0x0A, 0x2222), (2, 0xC1, 0x1111)])
    kfd = devices.read_kfd_nodes(tmp_path)
    empty_hip = devices.select_visible(
        "amdsmi", vendor, {"HIP_VISIBLE_DEVICES": "", "CUDA_VISIBLE_DEVICES": "1"}, kfd_nodes=kfd
    )
    assert [d.pci_bus_id for _, d in empty_hip.devices] == ["0000:c1:00.0"]
    both_empty = devices.select_visible(
        "amdsmi", vendor, {"HIP_VISIBLE_DEVICES": "", "CUDA_VISIBLE_DEVICES": ""}, kfd_nodes=kfd
    )
    assert len(both_empty.devices) == 2
    hidden = devices.select_visible(
        "amdsmi", vendor, {"HIP_VISIBLE_DEVICES": "-1", "CUDA_VISIBLE_DEVICES": ""}, kfd_nodes=kfd
    )
    assert hidden.devices == [] and hidden.warnings == []


def test_without_kfd_topology_the_pci_order_assumption_is_a_warning():
    vendor = [amd(0, "c1", "0x1111"), amd(1, "0a", "0x2222")]
    selection = devices.select_visible("amdsmi", vendor, {"HIP_VISIBLE_DEVICES": "0"}, kfd_nodes=None)
    assert [d.pci_bus_id for _, d in selection.devices] == ["0000:0a:00.0"]
    assert any("PCI bus order" in w for w in selection.warnings)


def test_cuda_visible_devices_uuid_prefix_and_a_bad_entry_ends_the_list():
    vendor = [
        nvidia(0, "17", "GPU-aaaa1111-0000-0000-0000-000000000000"),
        nvidia(1, "65", "GPU-bbbb2222-0000-0000-0000-000000000000"),
    ]
    selection = devices.select_visible("nvml", vendor, {"CUDA_VISIBLE_DEVICES": "GPU-bbbb,7,0"})
    assert [d.index for _, d in selection.devices] == [1]
    assert "'7'" in selection.warnings[0]
    assert devices.select_visible("nvml", vendor, {"CUDA_VISIBLE_DEVICES": ""}).devices == []
    positional = devices.select_visible("nvml", vendor, {"CUDA_VISIBLE_DEVICES": "1"})
    assert [d.index for _, d in positional.devices] == [1]
    assert any("position" in w for w in positional.warnings)
    assert not devices.select_visible(
        "nvml", vendor, {"CUDA_VISIBLE_DEVICES": "1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    ).warnings


def test_torch_view_matches_by_pci_bus_id_then_uuid():
    vendor = [
        nvidia(0, "17", "GPU-aaaa1111-0000-0000-0000-000000000000"),
        nvidia(1, "65", "GPU-bbbb2222-0000-0000-0000-000000000000"),
    ]
    torch_view = [
        TorchDevice(0, "NVIDIA H200", "0000:65:00.0", None),
        TorchDevice(1, "NVIDIA H200", None, "aaaa1111-0000-0000-0000-000000000000"),
    ]
    selection = devices.select_visible("nvml", vendor, {"CUDA_VISIBLE_DEVICES": "0"}, torch_devices=torch_view)
    assert [(ordinal, d.index) for ordinal, d in selection.devices] == [(0, 1), (1, 0)]
    assert "PCI bus id" in selection.how and "UUID" in selection.how
    other_vendor = devices.select_visible("amdsmi", [amd(0, "c1", "0x1111")], {}, torch_devices=torch_view)
    assert other_vendor.devices == []
