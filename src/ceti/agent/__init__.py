"""The provider agent: discovery, the reconcile loop, executors."""
