"""What trades earned and why: outcome labels written back for every signal and closed trade, and the
trade autopsy (costs against the mid at send, peers, counterfactual exits, a plain narrative).

Layer: above ``execution`` (it replays positions through the executor's own exit code and reads its
P&L rules) and below ``backtest`` (a backtest writes the same labels with the same code). Pure
functions take their clock and their data as arguments; the modules that read or write PostgreSQL
say so in their names.
"""
