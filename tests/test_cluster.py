"""Jobs a SLURM cluster can never run, from sinfo output: the testbed's (as it prints it) and a
GPU cluster's written in the same format."""

from segrobust.cluster import Request, parse_sinfo, unrunnable

# sinfo -h -N -o "%P|%c|%m|%G|%l" on slurm/testbed with 2 CPUs; a cluster with GPU nodes
TESTBED = "main*|2|24105|(null)|infinite\ngpu|2|24105|(null)|infinite\n"
GPU_CLUSTER = """cpu*|64|256000|(null)|2-00:00:00
cpu*|64|256000|(null)|2-00:00:00
gpu|32|512000|gpu:a100:4(S:0-1)|1-00:00:00
short|8|32000|gpu:2|30:00
"""


def test_sinfo_is_parsed_into_nodes_and_the_default_partition():
    nodes, default = parse_sinfo(GPU_CLUSTER)
    assert default == "cpu" and len(nodes) == 4
    assert [(n.partition, n.cpus, n.mem_mb, n.gpus, n.time_limit) for n in nodes[2:]] == [
        ("gpu", 32, 512000, 4, 1440),
        ("short", 8, 32000, 2, 30),
    ]
    assert parse_sinfo(TESTBED)[0][0].time_limit is None


def test_a_preprocessing_group_wider_than_the_node_is_named_with_the_setting():
    nodes, default = parse_sinfo(TESTBED)
    wide = Request("preprocess", None, 4, 16000, 0, 80)
    narrow = Request("preprocess", None, 2, 8000, 0, 80)
    (problem,) = unrunnable([wide, wide, narrow], nodes, default)
    assert problem.startswith("preprocess asks for 4 CPUs, 16000 MB, 0 GPUs, 80 min;")
    assert "partition 'main' have 2 CPUs, 24105 MB, 0 GPUs, time limit none" in problem
    assert "--resources preprocess_jobs=N" in problem


def test_gpu_time_and_partition_mismatches_each_say_what_to_change():
    nodes, default = parse_sinfo(TESTBED)
    gpu_job = Request("train_model", "gpu", 1, 16000, 1, 1440)
    (problem,) = unrunnable([gpu_job], nodes, default)
    assert "config/no_gpu.yaml" in problem and "resources.train_mem_mb" in problem
    nodes, default = parse_sinfo(GPU_CLUSTER)
    assert unrunnable([gpu_job], nodes, default) == []  # one A100 node, 24 h
    long_attack = Request("attack", "short", 1, 8000, 1, 240)
    (problem,) = unrunnable([long_attack], nodes, default)
    assert "time limit 30 min" in problem and "--set-resources attack:" in problem
    (problem,) = unrunnable([Request("split", "nope", 1, 4000, 0, 60)], nodes, default)
    assert "partition 'nope' not found (sinfo lists ['cpu', 'gpu', 'short'])" in problem
