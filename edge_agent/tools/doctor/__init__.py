"""``edge-agent doctor``: runtimes, libedgetpu, TPUs, cameras, model, broker, state dir."""
