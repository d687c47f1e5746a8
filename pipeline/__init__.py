"""The composed pipeline: policies that choose each image's size and resampler, the Python API, the ``ardet`` CLI.

    from pipeline import AdaptivePipeline
    pipe = AdaptivePipeline.from_config("configs/pipeline/demo.yaml")
    result = pipe("image.png")            # detections in original pixels, chosen size, per-stage FLOPs and times
    prep = pipe.preprocess("image.png")   # the resampled image only, for a detector of your own
"""
from pipeline.api import AdaptivePipeline, PipelineConfig, PipelineResult, Preprocessed
from pipeline.policies import (AdaptivePolicy, CascadePolicy, FixedPolicy, OraclePolicy, PolicyContext, Rendered,
                               SinglePassPolicy, build_policies, build_policy, list_policies, register_policy,
                               uncertainty)

__all__ = ["AdaptivePipeline", "PipelineConfig", "PipelineResult", "Preprocessed", "AdaptivePolicy", "CascadePolicy",
           "FixedPolicy", "OraclePolicy", "PolicyContext", "Rendered", "SinglePassPolicy", "build_policies",
           "build_policy", "list_policies", "register_policy", "uncertainty"]
