// An Express app with the method-override middleware configured the common
// ways (npm's README): the X-HTTP-Method-Override header, a "_method" field
// of a urlencoded (extended) or JSON body read by a custom getter after
// express.urlencoded and express.json, and a "_method" query parameter.
// It listens on a free loopback port, prints {"port": N} and answers every
// request with the method the app routed it as. Driven by
// serve_override_test.go.
import express from 'express'
import methodOverride from 'method-override'

const app = express()
app.use(express.urlencoded({ extended: true }))
app.use(express.json())
app.use(methodOverride('X-HTTP-Method-Override'))
app.use(methodOverride((req) => {
  if (req.body && typeof req.body === 'object' && '_method' in req.body) {
    const method = req.body._method
    delete req.body._method
    return method
  }
}))
app.use(methodOverride('_method'))
app.use((req, res) => {
  res.json({ method: req.method, original: req.originalMethod })
})
app.use((err, req, res, next) => {
  res.status(err.status || 500).json({ error: err.message, method: req.method })
})
const server = app.listen(0, '127.0.0.1', () => {
  console.log(JSON.stringify({ port: server.address().port }))
})
