"""The comparison of the methods across runs (rule `compare`): statistics over seeds, the best learning
rate per arm, differences between arms with their intervals, and the summary's tables and figures."""
