"""Engines that schedule the build's stages elsewhere than the local process.

The local engine is :class:`pvtt.builder.pipeline.Build`; the engines here run the same
per-item code on other schedulers and publish through the same multi-rank commit.
"""
