// _PalmTestSupport: helpers shared by the test targets (fp64 references, random tensors, tolerances). Not for users.
