"""Device physics shared by runtime and hwtrain: constants, memory devices (runtime.physics.devices),
periphery. The lowest layer: it imports nothing from compiler, runtime or hwtrain."""
