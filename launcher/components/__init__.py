"""The two components' own steps: the server wrapper (publishes its address, execs vLLM) and the trainer
step (fills the rendezvous, execs accelerate launch).
"""
