"""Charts that fit the notebook cell they are shown in.

A plotly ``FigureWidget`` with no width set takes the width of its output when it is first
drawn; drawn before JupyterLab has laid the output out (as it is when a cell's output first
appears), it gets plotly's default of 700 px instead and keeps it: too narrow in a wide
cell, cut in a narrow one. A change of ``autosize`` sent from the kernel makes it measure
its container again, but the kernel cannot see when that is needed; the page can.

:func:`fit_charts` is an invisible widget put in a box beside its figures. In the page it
checks once a second, while it is shown, whether a chart of its box is drawn at another
width than its container has (once per width a chart takes, never in a loop), and then
says so to the kernel through a hidden text field; the kernel turns the figures'
``autosize`` off and on (:func:`remeasure`), and each figure sizes itself to its cell.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import ipywidgets as w

# Runs in the page when the (invisible, broken on purpose) image fails to load: the way an
# HTML widget runs code, and only where the widget is live in a notebook.
_FIT_SCRIPT = (
    "var img=this,own=img.closest('.workbench-fit-charts'),done=new WeakMap();"
    "var box=(own&&own.parentElement&&own.parentElement.closest('.widget-box'))||document.body;"
    "var t=setInterval(function(){"
    "if(!img.isConnected){clearInterval(t);return;}"
    "var field=own&&own.querySelector('input');if(!field)return;"
    "box.querySelectorAll('.js-plotly-plot').forEach(function(gd){"
    "var svg=gd.querySelector('.main-svg');if(!svg)return;"
    "var want=Math.round(gd.getBoundingClientRect().width),"
    "drawn=Math.round(svg.getBoundingClientRect().width);"
    "if(want>0&&Math.abs(want-drawn)>2&&done.get(gd)!==want){done.set(gd,want);"
    "field.value=String(Date.now());"
    "field.dispatchEvent(new Event('input',{bubbles:true}));}"
    "});},1000);"
)


def remeasure(figures: Sequence) -> None:
    """Have each figure (a ``FigureWidget`` with no width of its own) size itself to its
    container: ``autosize`` off, then on, in two messages."""
    for figure in figures:
        if figure.layout.width is None:
            figure.layout.autosize = False
            figure.layout.autosize = True


def fit_charts(figures: Callable[[], Sequence] | Sequence) -> w.Box:
    """An invisible widget that keeps the plotly figures of the box it is put in as wide as
    that box (see the module's docstring). ``figures``: the figures, or a function that
    returns them (for a view whose figures change)."""
    field = w.Text(continuous_update=True, layout=w.Layout(display="none"))
    field.observe(lambda _: remeasure(figures() if callable(figures) else figures), names="value")
    script = w.HTML(f"<img src='data:,' alt='' style='display:none' onerror=\"{_FIT_SCRIPT}\">")
    box = w.Box([field, script], layout=w.Layout(display="none"))
    box.add_class("workbench-fit-charts")
    return box
