"""Pictures of the data, for people: the end of the line, nothing reads them back.

`preview` draws example cutouts band by band and their flux distributions from class files or a
built dataset; `report_html` turns the `inspect` report into one self-contained HTML page. Needs
the optional plot extra (matplotlib), imported only when drawing.
"""
