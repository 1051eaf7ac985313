"""What a person looks at: the interactive viewer (viser + nerfview, rendering through the models' own
`render_views`) and `viewer.html`, a self-contained web page of a Gaussians run (Spark in the browser)."""
