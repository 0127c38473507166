"""The nodes benchmark: the configurations it runs are valid router configurations (one per
node, on one journal), and its table names every layout."""

from __future__ import annotations

from benchmarks.nodes import NodesRun, _node_config, report
from benchmarks.router import RULES
from rulesengine.config import load_config


def test_each_node_gets_a_valid_configuration_of_its_own_on_the_shared_journal(tmp_path):
    (tmp_path / "bench.rules").write_text(RULES)
    url = "postgresql://bench@127.0.0.1:5432/journal"
    configs = [load_config(str(_node_config(tmp_path, f"node{index}", 11110 + index, 11200, url)))
               for index in (1, 2, 3)]
    assert [config.node for config in configs] == ["node1", "node2", "node3"]
    assert {config.journal.url for config in configs} == {url}
    assert [config.listeners[0].port for config in configs] == [11111, 11112, 11113]
    assert all(set(config.destinations) == {"SCP"} for config in configs)
    alone = load_config(str(_node_config(tmp_path, "node1", 11111, 11200, None)))
    assert alone.journal is None  # SQLite, in the storage folder


def test_the_table_gives_rate_and_cpu_per_instance_and_the_database_only_where_there_is_one(capsys):
    report({"1 node, SQLite": NodesRun(2.0, 200, 4.0, 0.0),
            "3 nodes, PostgreSQL": NodesRun(4.0, 200, 8.0, 1.0)}, 200, 530000, 1)
    lines = capsys.readouterr().out.splitlines()
    sqlite = next(line for line in lines if line.strip().startswith("1 node, SQLite"))
    three = next(line for line in lines if line.strip().startswith("3 nodes, PostgreSQL"))
    assert sqlite.split()[-3:] == ["100.0", "20.00", "-"]
    assert three.split()[-3:] == ["50.0", "40.00", "5.00"]
