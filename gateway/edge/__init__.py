"""The HTTP edge: the app and its lifespan (`app`), reading fields (`fields`),
where a key is presented (`auth`), and the exception table (`answers`)."""
