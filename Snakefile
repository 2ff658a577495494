# ftcompare: LoRA vs full-parameter fine-tuning, measured and reported end to end.
# Quick start: `make reproduce` (embedded default, CPU, offline). The blog's setup on a GPU:
#   snakemake --cores all --configfile config/blog.yaml
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/plan.smk"
include: "rules/base_model.smk"
include: "rules/prepare_data.smk"
include: "rules/train.smk"
include: "rules/generate.smk"
include: "rules/compare.smk"
include: "rules/evaluate.smk"
include: "rules/analyse_weights.smk"
include: "rules/lm_eval.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        rules.report.output,
        rules.compare.output.summary,
