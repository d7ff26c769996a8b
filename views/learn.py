"""Learn: the day on continuous batching, lesson by lesson, each shown by a run recorded here."""

import streamlit as st

from dashboard import learn, learn_questions, learn_view, settings
from dashboard.learn_lessons import LESSONS
from storage.database import StorageError

st.title("Learn")
st.markdown("Continuous batching in nine lessons, in the order of a day's course: why static batching wastes "
            "work, how a continuous-batching scheduler decides each step, and what its settings trade. Each lesson "
            "records its own runs with one button, draws what they show, and puts the course's figure next to "
            "the figure the run gave. Unit-cost simulations (every step costs one time unit) reproduce the "
            "textbook's step counts exactly; runs on the real `tiny` model show the same in seconds.")
target = settings.db_target()
try:
    runs = learn.lesson_runs(target)
except StorageError as exc:
    st.error(f"Cannot read the database: {exc}")
    st.stop()

contents = [f"[{n}. {lesson.title}](#{lesson.key})" for n, lesson in enumerate(LESSONS, 1)]
with st.container(border=True):
    st.markdown("**Lessons** · " + " · ".join([*contents, "[Five questions](#questions)"]))

for number, lesson in enumerate(LESSONS, 1):
    learn_view.section(number, lesson, target, runs)

st.header("Five questions", anchor="questions", divider="gray")
st.markdown("What a learner should be able to answer after the day, each answered by the runs above.")
for n, answer in enumerate(learn_questions.answers(target, runs), 1):
    st.markdown(f"**{n}. {answer.question}**")
    if answer.answer is None:
        lessons = ", ".join(learn_questions.lesson(key) for key in answer.lessons)
        st.caption(f"Record {lessons} to see the answer in its runs.")
    else:
        st.markdown(answer.answer)
