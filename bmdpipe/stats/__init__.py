"""Trial statistics from the database or a CSV table (``bmdpipe stats``).

roc (AUC, DeLong CI and test, Youden cut-off), regression (logistic odds ratios, GEE for
screws clustered in patients), groups (Table 1), icc (inter-reader agreement), endpoints
(rates and scores by arm), report (the HTML trial report), cohort (a synthetic cohort with
known effects), data (reading the database and tables). Kept free of imports so that
``bmdpipe stats --help`` stays instant.
"""
