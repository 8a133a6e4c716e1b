"""The run report: one self-contained static HTML page of a run or sweep from the files
its workdir holds (build.py, run_sections.py, curves.py, html.py), and headless
Chromium to check it renders (browser.py). `python -m experiments.report`."""
