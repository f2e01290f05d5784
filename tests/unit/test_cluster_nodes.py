"""Device numbering over the nodes of a Ray cluster (pure: Ray's node records made by hand)."""

from rlinf.scheduler.cluster import DEVICE_RESOURCE, devices_from_nodes


def _node(node_id, ip, port, devices, head=False, alive=True):
    resources = {DEVICE_RESOURCE: devices, "CPU": 4.0}
    if head:
        resources["node:__internal_head__"] = 1.0
    return {"NodeID": node_id, "NodeManagerAddress": ip, "NodeManagerPort": port, "Alive": alive,
            "Resources": resources}


def test_head_first_then_by_address_and_port_dead_nodes_skipped():
    nodes = [_node("c", "10.0.0.2", 900, 1.0), _node("dead", "10.0.0.1", 1, 4.0, alive=False),
             _node("b", "10.0.0.1", 700, 2.0), _node("h", "10.0.0.9", 500, 1.0, head=True)]
    devices = devices_from_nodes(nodes, DEVICE_RESOURCE, "cpu")
    assert [(d.index, d.node_id, d.local_index) for d in devices] == [
        (0, "h", 0), (1, "b", 0), (2, "b", 1), (3, "c", 0)]
    assert {d.kind for d in devices} == {"cpu"}
    assert devices[1].node_ip == "10.0.0.1"


def test_nodes_without_the_resource_hold_no_device():
    nodes = [_node("h", "10.0.0.9", 500, 0.0, head=True), _node("g", "10.0.0.3", 1, 8.0)]
    nodes[1]["Resources"]["GPU"] = 2.0
    assert [(d.node_id, d.kind) for d in devices_from_nodes(nodes, "GPU", "cuda")] == [("g", "cuda"), ("g", "cuda")]
    assert [d.node_id for d in devices_from_nodes(nodes, DEVICE_RESOURCE, "cpu")] == ["g"] * 8
