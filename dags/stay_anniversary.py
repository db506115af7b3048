"""A campaign written in Python instead of YAML: the first anniversary of a completed stay.

The example of README "Adding a DAG in Python": ``define_campaign`` checks the fields, the segment file
and the templates just as a YAML file is checked (an error names this file), and ``build_dag`` gives it
the same DAG as every campaign (plan → send_chunk per chunk → report, with the trigger form's Params).
"""

from loyalflow.airflow.dags import build_dag
from loyalflow.home import campaigns_dir, templates_dir
from loyalflow.spec import Step, define_campaign

campaign = define_campaign(
    campaigns_dir() / "stay_anniversary.py",  # the segment path is relative to the campaigns folder
    templates_dir(),
    id="stay_anniversary",
    name="Stay anniversary",
    description="One year after a completed stay, a short note and an invitation to return; a guest who "
    "has booked again since is not reminded.",
    category="marketing",
    tags=["lifecycle", "python"],
    channels=["email", "sms"],
    segment="sql/stay_anniversary.sql",
    steps=[Step(id="anniversary", description="A year ago you stayed with us", delay_days=365)],
    catch_up_days=2,
    holdout_percent=10,
    priority=30,
    reentry_days=300,
)
dag = build_dag(campaign)
