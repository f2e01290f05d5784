"""python -m rlinf.plan: profile a config's phases, model their cost and memory per placement, simulate the
schedule of every candidate plan and rank them (docs/planner.md).

Modules: hardware (hardware files), memory (peak bytes per device), cost_model (phase time vs devices),
simulate (candidates, step-time simulation, ranking) are pure; profile runs `python -m rlinf.run` for the
measurements; api ties them together (and expands `cluster.component_placement: auto`); paper plans
published workloads from per-device rates. rlinf.plan sits at the top next to rlinf.run: nothing in rlinf
imports it.
"""
