"""The two components' own steps, run on each node of their component inside the job: the server wrapper
(serve.py: publishes its address, execs vLLM) and the trainer step (trainer_step.py: decides preflight vs
training, fills the rendezvous, execs the trainer). Both decide the device once (common.py) and pass it on
in LAUNCHER_DEVICE.
"""
