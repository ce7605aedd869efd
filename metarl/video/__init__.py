"""Watch a meta-policy adapt: render held-out tasks before and after each unit of adaptation.

``python -m metarl.evaluate RUN_DIR --video`` picks tasks that span the family
(:func:`~metarl.video.tasks.spread_tasks`, or ``--video-task-ids``), asks the learner
for the policies meta-test acts with (:meth:`~metarl.algos.base.ShowsAdaptation.adapted_actors`:
for MAML-style learners the policy before adapting and after each policy-gradient step,
adapted on the episodes meta-test samples; for RL2 one trial whose hidden state runs
through its episodes), plays one episode per column with each policy's *mean* action
(no exploration noise, so a render is reproducible), in this process, on an env made
with ``render_mode="rgb_array"``, and lays the frames out as a film:

* one row per task (a title bar naming it), one column per unit of adaptation
  (``before``, ``after 1 step``, ... or ``episode 1``, ``episode 2``, ...);
* every cell is a label strip of three lines (the column, ``mean action``, and the
  step and return so far) over the env's frame, fitted into the cell size;
* a film has ``F = horizon + 1`` frames (the frame after reset, then one per step);
  an episode that ends early holds its last frame. All cells play at once.

One job per module:

* :mod:`~metarl.video.tasks`: which tasks of a pool to film;
* :mod:`~metarl.video.render_env`: an env that renders here, or one line saying why not
  (the OpenGL diagnosis itself is :mod:`metarl.gl`, which the rest of metarl shares);
* :mod:`~metarl.video.playback`: play the policies, keep their frames (a ``Film``);
* :mod:`~metarl.video.layout`: the film's geometry, labels and frames;
* :mod:`~metarl.video.text`: text drawn with numpy from glyphs matplotlib renders once;
* :mod:`~metarl.video.output`: MP4s, GIF, PNG sheet and TensorBoard images.

Importing this package imports none of its modules (the command line imports
:class:`VideoError` from here without loading the video stack).
"""

from __future__ import annotations

EXTRA_HINT = 'pip install "metarl[video]"'
"""What to run when the ``video`` extra (imageio, imageio-ffmpeg) is missing."""


class VideoError(Exception):
    """A film cannot be made here (no extra, no renderer, a learner without actors):
    bad input for the command line, one line and exit code 2."""
