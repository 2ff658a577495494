"""Config validation: defaults, per-run settings, and one clear message per problem."""

import copy

import pytest
import yaml

from conftest import REPO, load_yaml
from ftcompare.config import ConfigError, config_hash, load_schema, run_settings, validate_config


def test_default_and_blog_configs_validate(default_config, blog_config):
    assert list(default_config["runs"]) == ["lora", "qlora", "full"]
    assert default_config["telemetry"] == {"backend": "auto", "interval_s": 0.5}
    assert blog_config["base_model"]["name"] == "NousResearch/Llama-2-7b-chat-hf"
    assert blog_config["data"]["name"] == "mlabonne/guanaco-llama2-1k"
    # As the blog: every one of the 1,000 rows trains; the held-out rows come from the full set's test split.
    assert blog_config["data"]["eval_source"] == {
        "name": "mlabonne/guanaco-llama2",
        "revision": None,
        "split": "test",
        "max_rows": None,
    }
    assert blog_config["training"]["max_seq_length"] == 1024
    assert blog_config["generation"]["dtype"] == "float16" and default_config["generation"]["dtype"] is None
    assert run_settings(blog_config, "lora")["training"]["learning_rate"] == 4e-5
    assert run_settings(blog_config, "full")["training"]["learning_rate"] == 4e-7
    assert run_settings(blog_config, "qlora")["training"]["learning_rate"] == 4e-5  # the blog's LoRA rate


def test_empty_config_takes_every_default():
    config = validate_config({}, search_dirs=[REPO])
    assert config["data"]["name"] == "embedded"
    assert config["base_model"]["embedded"]["hidden_size"] == 128
    assert config["training"]["per_device_train_batch_size"] == 4
    assert config["lora"] == {
        "r": 8,
        "lora_alpha": 8,
        "lora_dropout": 0.1,
        "bias": "none",
        "target_modules": None,
        "use_dora": False,
        "use_rslora": False,
    }
    assert config["quantization"] == {
        "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_use_double_quant": True,
        "bnb_4bit_compute_dtype": "bfloat16",
    }
    assert set(config["runs"]) == {"lora", "qlora", "full"}


def test_run_overrides_stay_sparse_so_global_changes_reach_them():
    config = validate_config(
        {"training": {"logging_steps": 7}, "runs": {"a": {"method": "full", "training": {"learning_rate": 1e-3}}}},
        search_dirs=[REPO],
    )
    assert config["runs"]["a"]["training"] == {"learning_rate": 1e-3}
    assert run_settings(config, "a")["training"]["logging_steps"] == 7


def test_hash_changes_with_any_value(default_config):
    changed = copy.deepcopy(default_config)
    changed["lora"]["r"] = 16
    assert config_hash(changed) != config_hash(default_config)
    assert config_hash(copy.deepcopy(default_config)) == config_hash(default_config)


BAD_CONFIGS = [
    ({"unknown_key": 1}, "unknown key `unknown_key`"),
    ({"training": {"learning_rate": 0}}, "`training.learning_rate` = 0: must be > 0"),
    ({"training": {"learning_rate": -1e-4}}, "`training.learning_rate` = -0.0001: must be > 0"),
    ({"training": {"learning_rate": "fast"}}, "`training.learning_rate` = 'fast': must be of type number"),
    ({"training": {"per_device_train_batch_size": 0}}, "`training.per_device_train_batch_size` = 0: must be >= 1"),
    ({"training": {"optim": "adam_fancy"}}, "`training.optim` = 'adam_fancy': allowed values are adamw_torch"),
    ({"training": {"lr_scheduler_type": "sawtooth"}}, "`training.lr_scheduler_type` = 'sawtooth': allowed values"),
    ({"training": {"warmup_ratio": 1.5}}, "`training.warmup_ratio` = 1.5: must be < 1"),
    ({"training": {"fp16": True, "bf16": True}}, "training.fp16 and training.bf16 are both true"),
    (
        {"training": {"drop_padding_mask": True}},
        "runs.lora: training.drop_padding_mask: true needs lm_head_loss: full_logits",
    ),
    (
        {"training": {"gradient_checkpointing": "yes"}},
        "`training.gradient_checkpointing` = 'yes': must be of type boolean",
    ),
    ({"lora": {"r": 0}}, "`lora.r` = 0: must be >= 1"),
    ({"lora": {"lora_dropout": 1.0}}, "`lora.lora_dropout` = 1.0: must be < 1"),
    ({"lora": {"lora_dropout": -0.1}}, "`lora.lora_dropout` = -0.1: must be >= 0"),
    ({"lora": {"bias": "some"}}, "`lora.bias` = 'some': allowed values are none, all, lora_only"),
    ({"lora": {"target_modules": []}}, "`lora.target_modules` = []: must be null"),
    ({"runs": {"x": {"method": "qlora4"}}}, "`runs.x.method` = 'qlora4': allowed values are lora, qlora, full"),
    ({"runs": {"x": {}}}, "`runs.x`: missing key `method` (lora, qlora or full)"),
    (
        {"quantization": {"bnb_4bit_quant_type": "int4"}},
        "`quantization.bnb_4bit_quant_type` = 'int4': allowed values are nf4, fp4",
    ),
    (
        {"runs": {"q": {"method": "qlora", "quantization": {"bnb_4bit_compute_dtype": "float8"}}}},
        "`runs.q.quantization.bnb_4bit_compute_dtype` = 'float8': allowed values are auto, bfloat16, float16, float32",
    ),
    ({"quantization": {"load_in_8bit": True}}, "unknown key `quantization.load_in_8bit`"),
    ({"runs": {"../escape": {"method": "lora"}}}, "run name '../escape' is not allowed"),
    ({"runs": {"a b": {"method": "lora"}}}, "run name 'a b' is not allowed"),
    ({"runs": {"base": {"method": "full"}}}, "run name 'base' is not allowed"),
    ({"runs": {}}, "`runs` = {}: must not be empty"),
    (
        {"runs": {"x": {"method": "lora", "training": {"max_steps": -5}}}},
        "`runs.x.training.max_steps` = -5: must be >= -1",
    ),
    ({"runs": {"x": {"method": "lora", "lora": {"rank": 4}}}}, "unknown key `runs.x.lora.rank`"),
    ({"telemetry": {"backend": "rocm-smi"}}, "`telemetry.backend` = 'rocm-smi': allowed values are auto, amdsmi, nvml"),
    ({"telemetry": {"interval_s": 0}}, "`telemetry.interval_s` = 0: must be >= 0.01"),
    ({"device": "tpu"}, "`device` = 'tpu': allowed values are auto, cpu, cuda"),
    ({"generation": {"prompts": "no/such/prompts.yaml"}}, "generation.prompts = 'no/such/prompts.yaml': no such file"),
    ({"generation": {"max_new_tokens": 0}}, "`generation.max_new_tokens` = 0: must be >= 1"),
    ({"data": {"eval_fraction": 0}}, "`data.eval_fraction` = 0: must be > 0"),
    ({"seed": -1}, "`seed` = -1: must be >= 0"),
    (
        {"base_model": {"embedded": {"hidden_size": 100, "num_attention_heads": 3}}},
        "base_model.embedded.hidden_size = 100: must be a multiple of num_attention_heads (3)",
    ),
    (
        {"base_model": {"embedded": {"pretrain_seq_length": 1024, "max_position_embeddings": 512}}},
        "base_model.embedded.pretrain_seq_length = 1024: must be <= max_position_embeddings (512)",
    ),
    ({"training": {"strategy": "zero3"}}, "`training.strategy` = 'zero3': allowed values are single, device_map, ddp"),
    ({"training": {"devices": 0}}, "`training.devices` = 0: must be >= 1"),
    (
        {"runs": {"x": {"method": "full", "training": {"devices": 2}}}},
        "runs.x: training.devices = 2 needs a strategy that uses them: training.strategy: ddp, fsdp or device_map",
    ),
    (
        {"runs": {"x": {"method": "full", "training": {"strategy": "ddp"}}}},
        "runs.x: training.strategy: ddp spreads a run over devices; set training.devices >= 2",
    ),
    (
        {"device": "cpu", "runs": {"x": {"method": "full", "training": {"strategy": "fsdp", "devices": 2}}}},
        "runs.x: training.strategy: fsdp needs GPUs, and device is cpu; on a CPU use strategy: ddp (gloo processes) "
        "or single",
    ),
    (
        {"device": "cpu", "runs": {"x": {"method": "lora", "training": {"strategy": "device_map", "devices": 2}}}},
        "runs.x: training.strategy: device_map needs GPUs, and device is cpu",
    ),
]


@pytest.mark.parametrize("overrides,message", BAD_CONFIGS, ids=[m[:40] for _, m in BAD_CONFIGS])
def test_bad_config_is_refused_with_a_message_naming_the_key(overrides, message):
    with pytest.raises(ConfigError) as caught:
        validate_config(overrides, search_dirs=[REPO])
    text = str(caught.value)
    assert message in text
    assert "Traceback" not in text
    assert all(len(line) < 400 for line in text.splitlines())


# (the prompts file's text, what the config check says after "generation.prompts = 'prompts.yaml': ")
BAD_PROMPTS_FILES = [
    ("prompts: [a, b\n", "not valid YAML (line 2, column 1: expected ',' or ']', but got '<stream end>')"),
    ("- a\n- b\n", "holds a list, not a mapping"),
    ("", "holds nothing (null), not a mapping"),
    ("questions:\n  - a\n", "has no `prompts:` key"),
    ("prompts: one question\n", "`prompts` holds a string, not a list"),
    ("prompts: []\n", "`prompts` is an empty list"),
    ("prompts:\n  - a\n  - 2\n", "prompt 2 is an integer, not a string"),
    ("prompts:\n  - a\n  - ''\n", "prompt 2 is empty"),
]


@pytest.mark.parametrize("text, reason", BAD_PROMPTS_FILES, ids=[reason for _, reason in BAD_PROMPTS_FILES])
def test_a_bad_prompts_file_is_refused_with_the_config(tmp_path, text, reason):
    (tmp_path / "prompts.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        validate_config({"generation": {"prompts": "prompts.yaml"}}, search_dirs=[tmp_path, REPO])
    assert caught.value.problems == [
        f"generation.prompts = 'prompts.yaml': {reason}; "
        "expected a `prompts:` list of non-empty strings, like config/prompts.yaml"
    ]


def test_a_prompts_file_the_generate_job_accepts_passes_the_config_check(tmp_path):
    (tmp_path / "prompts.yaml").write_text("note: extra keys are fine\nprompts:\n  - ' one '\n", encoding="utf-8")
    validate_config({"generation": {"prompts": "prompts.yaml"}}, search_dirs=[tmp_path, REPO])


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as caught:
        validate_config({"lora": {"r": 0}, "training": {"learning_rate": 0}, "bogus": 1}, search_dirs=[REPO])
    assert len(caught.value.problems) == 3


def test_schema_enums_match_the_installed_transformers():
    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames

    training = load_schema()["$defs"]["training"]["properties"]
    assert training["optim"]["enum"] == [o.value for o in OptimizerNames]
    assert training["lr_scheduler_type"]["enum"] == [s.value for s in SchedulerType]


def test_prompts_file_lists_the_blog_prompt_first():
    prompts = yaml.safe_load((REPO / "config" / "prompts.yaml").read_text())["prompts"]
    assert prompts[0] == "What do you think is the most important part of building an AI chatbot?"
    assert len(prompts) == 8


def test_blog_config_sets_every_training_key_so_nothing_leaks_from_the_default():
    for section in ("training", "quantization"):
        schema_keys = set(load_schema()["$defs"][section]["properties"])
        assert set(load_yaml("blog.yaml")[section]) == schema_keys, section


def test_run_overrides_reach_only_their_run(default_config):
    config = validate_config(
        {
            **default_config,
            "runs": {
                "lora": {"method": "lora"},
                "lora-r64": {
                    "method": "lora",
                    "lora": {"r": 64, "lora_alpha": 16},
                    "training": {"learning_rate": 1e-4},
                },
                "full": {"method": "full"},
            },
        }
    )
    assert run_settings(config, "lora")["lora"]["r"] == 8
    assert run_settings(config, "lora-r64")["lora"] == {**config["lora"], "r": 64, "lora_alpha": 16}
    assert run_settings(config, "lora-r64")["training"]["learning_rate"] == 1e-4
    assert "lora" not in run_settings(config, "full")


def test_a_run_may_train_over_several_devices_where_the_config_allows_it():
    """ddp on a CPU is gloo processes; fsdp and device_map are refused only where the config says cpu (the
    job refuses them on a machine without GPUs: test_parallel.py)."""
    runs = {
        "ddp": {"method": "full", "training": {"strategy": "ddp", "devices": 2}},
        "sharded": {"method": "full", "training": {"strategy": "fsdp", "devices": 4}},
        "spread": {"method": "lora", "training": {"strategy": "device_map", "devices": 2}},
    }
    config = validate_config({"device": "auto", "runs": runs}, search_dirs=[REPO])
    assert run_settings(config, "sharded")["training"]["devices"] == 4
    assert config["training"]["strategy"] == "single" and config["training"]["devices"] == 1
    validate_config({"device": "cpu", "runs": {"ddp": runs["ddp"]}}, search_dirs=[REPO])


def test_the_blog_s_full_run_spreads_over_two_devices_as_the_blog_did(blog_config):
    assert {"strategy": "device_map", "devices": 2}.items() <= run_settings(blog_config, "full")["training"].items()
    assert run_settings(blog_config, "lora")["training"]["strategy"] == "single"


def test_a_qlora_run_trains_the_lora_section_on_the_quantized_base_and_only_it_reads_quantization():
    config = validate_config(
        {
            "lora": {"r": 4},
            "quantization": {"bnb_4bit_use_double_quant": False},
            "runs": {
                "lora": {"method": "lora"},
                "q": {"method": "qlora", "quantization": {"bnb_4bit_quant_type": "fp4"}},
                "full": {"method": "full"},
            },
        },
        search_dirs=[REPO],
    )
    q = run_settings(config, "q")
    assert q["lora"] == run_settings(config, "lora")["lora"] and q["lora"]["r"] == 4
    assert q["quantization"] == {
        "bnb_4bit_quant_type": "fp4",
        "bnb_4bit_use_double_quant": False,
        "bnb_4bit_compute_dtype": "bfloat16",
    }
    assert "quantization" not in run_settings(config, "lora") and "quantization" not in run_settings(config, "full")


@pytest.fixture
def without(monkeypatch):
    """Make importlib.util.find_spec answer None for the given modules, as if they were not installed."""
    import importlib.util

    find_spec = importlib.util.find_spec

    def hide(*modules):
        monkeypatch.setattr(
            importlib.util, "find_spec", lambda name, *a: None if name in modules else find_spec(name, *a)
        )

    return hide


def test_a_method_or_optimizer_whose_package_is_missing_is_refused(without):
    without("bitsandbytes")
    config = {
        "training": {"optim": "adamw_torch"},
        "runs": {
            "lora": {"method": "lora", "training": {"optim": "paged_adamw_32bit"}},
            "q": {"method": "qlora"},
            "full": {"method": "full"},
        },
    }
    with pytest.raises(ConfigError) as caught:
        validate_config(config, search_dirs=[REPO])
    assert caught.value.problems == [
        "runs.lora: training.optim = paged_adamw_32bit needs the bitsandbytes package (pip install bitsandbytes)",
        "runs.q: method qlora needs the bitsandbytes package (pip install bitsandbytes)",
    ]
    # Where Snakemake deploys the jobs' own environments (--sdm conda), this one is not theirs.
    validate_config(config, search_dirs=[REPO], check_packages=False)


def test_other_optimizers_name_their_own_package(without):
    without("schedulefree", "galore_torch")
    with pytest.raises(ConfigError) as caught:
        validate_config(
            {
                "runs": {
                    "a": {"method": "full", "training": {"optim": "schedule_free_adamw"}},
                    "b": {"method": "lora", "training": {"optim": "galore_adamw_8bit"}},
                }
            },
            search_dirs=[REPO],
        )
    assert caught.value.problems == [
        "runs.a: training.optim = schedule_free_adamw needs the schedulefree package (pip install schedulefree)",
        "runs.b: training.optim = galore_adamw_8bit needs the galore_torch package (pip install galore-torch)",
    ]


def test_the_optimizer_packages_follow_transformers():
    """Every optimizer transformers builds with bitsandbytes is checked for it, and every name checked is one
    the schema allows."""
    from transformers import trainer_optimizer

    from ftcompare.needed_packages import BITSANDBYTES, OPTIMIZER_PACKAGES

    bnb = {name.value for name in trainer_optimizer._BITSANDBYTES_OPTIMIZERS}
    assert {name for name, package in OPTIMIZER_PACKAGES.items() if package == BITSANDBYTES} == bnb
    assert set(OPTIMIZER_PACKAGES) <= set(load_schema()["$defs"]["training"]["properties"]["optim"]["enum"])
