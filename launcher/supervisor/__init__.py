"""The in-job supervisor: starts the components' steps, watches them, decides how the attempt ends,
requeues. The flow, in modules:

  entry.py     what submitit runs in the batch step; what the attempt's Result means for submitit
  loop.py      the Supervisor: wires the monitors to real steps, signals, files and the clock
  restart.py   what a requeued attempt checks first (previous result, stale steps, max_requeues)
  monitors.py  pure watchers: server startup and health, trainer watchdog, trainer end
  endings.py   pure decisions on Slurm's signals: the USR2 budget, SIGTERM's causes
  verdicts.py  what those decisions answer (End, Restart, Healthy, Event, NodeLost)
  steps.py     starting and stopping components (srun steps or local process groups)
  clock.py     the clock and the waits (a fake one in tests)
"""
