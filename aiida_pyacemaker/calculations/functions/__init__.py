"""Calcfunctions of the plugin: every data transformation the work chains record in the provenance graph.

- ``oracle``: chunking a structure set, the routing decision, the assembly of labels of both tiers;
- ``training``: the history append, the replay training set, forgetting on the frozen test set;
- ``campaign``: candidate pools, rows by label source, the teacher's energy reference, the campaign summary.
"""
