"""Device physics shared by runtime and hwtrain: constants, PCM inference model, periphery."""

from runtime.physics.pcm import PCMConfig, PCMInferenceModel, ProgrammedPCM
from runtime.physics.periphery import quantize

__all__ = ["PCMConfig", "PCMInferenceModel", "ProgrammedPCM", "quantize"]
